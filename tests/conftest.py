"""Shared fixtures: tiny generated releases, and helpers to write broken ones."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from landslide.synth.release import generate_release

REPO = Path(__file__).resolve().parents[1]
#: the longest test files, longest first (measured on 2 cores), handed to the workers before the others: with
#: ``--dist loadfile`` a long file taken last would run alone at the end (``--no-loadscope-reorder`` keeps this
#: order; xdist would otherwise take the files with the most tests first)
LONGEST_FIRST = ("test_sweeps.py", "test_safety.py", "test_ddp.py", "test_models.py", "test_cluster.py",
                 "test_tracking.py", "test_pipeline.py", "test_messages.py", "test_timings.py", "test_maps.py",
                 "test_trust.py", "test_labels.py", "test_families.py", "test_stacked_cv.py", "test_configs.py",
                 "test_segment.py", "test_bench.py", "test_filter.py", "test_scenes_profile.py", "test_synthetic.py",
                 "test_stacked.py")


def pytest_configure(config: pytest.Config) -> None:
    """Under xdist, each worker's share of the cores (its own torch, and OpenMP in the processes it starts): two
    workers with two threads each on two cores ran the heaviest files 17% slower than with one each."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first, the others in their usual order (each file's tests keep theirs)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def data_settings(**overrides) -> dict:
    """LandslideDataModule's settings as ``configs/data/default.yaml`` gives them (all but its folders and the
    synthetic set), with ``overrides``: the configs hold the defaults, the code none. Device-dependent values are
    resolved for a CPU trainer, as the tests train."""
    from landslide.cli import register_resolvers

    register_resolvers()
    raw = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "data" / "default.yaml"))
    kept = {k: v for k, v in raw.items() if k not in ("_target_", "root", "cache_dir", "synthetic")}
    settings = OmegaConf.to_container(OmegaConf.create({**kept, "trainer": {"accelerator": "cpu"}}), resolve=True)
    settings.pop("trainer")
    return {**settings, **overrides}


def map_settings(**overrides) -> dict:
    """``predict_scene``'s settings as ``configs/map.yaml`` gives them, with ``overrides``."""
    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "map.yaml"))
    keys = ("mode", "stride", "blend", "blend_by_mode", "dtype", "threshold", "min_valid", "min_area_m2", "smooth",
            "resolution_m", "resolution_tolerance", "windows_per_batch", "batch_size", "tta", "device", "progress",
            "gdal_cache_mb")
    from landslide.cli import register_resolvers

    register_resolvers()
    merged = OmegaConf.create({**{k: cfg[k] for k in keys}, **overrides})
    return OmegaConf.to_container(merged, resolve=True)  # the batch by the device, an overridden one included


def model_settings(**overrides) -> dict:
    """LandslideModule's settings as ``configs/model_base.yaml`` gives them (the optimiser and scheduler built as
    the factories train.py passes), with ``overrides``."""
    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "model_base.yaml"))
    cfg.pop("_target_")
    cfg.pop("trusted_networks")  # train.py's, not the module's
    settings = {k: instantiate(v) if isinstance(v, dict) and "_target_" in v else v for k, v in cfg.items()}
    return {**settings, **overrides}


@pytest.fixture(scope="session")
def tiny_release(tmp_path_factory) -> Path:
    """A generated release: 120 train and 40 test patches."""
    root = tmp_path_factory.mktemp("release")
    generate_release(root, 120, 40, seed=3, workers=1)
    return root


@pytest.fixture()
def release_copy(tiny_release, tmp_path) -> Path:
    """A private copy of the tiny release that a test may break."""
    dst = tmp_path / "release"
    shutil.copytree(tiny_release, dst)
    return dst


def write_release(root: Path, n_train: int = 12, n_test: int = 4, seed: int = 0) -> tuple[list[str], list[str]]:
    """A minimal valid release of random patches (half positive); returns the train and test IDs."""
    rng = np.random.default_rng(seed)
    (root / "train_data").mkdir(parents=True, exist_ok=True)
    (root / "test_data").mkdir(parents=True, exist_ok=True)
    train_ids = [f"T{i:03d}" for i in range(n_train)]
    test_ids = [f"S{i:03d}" for i in range(n_test)]
    for folder, ids in (("train_data", train_ids), ("test_data", test_ids)):
        for i in ids:
            np.save(root / folder / f"{i}.npy", rng.normal(size=(64, 64, 12)))
    pd.DataFrame({"ID": train_ids, "label": [i % 2 for i in range(n_train)]}).to_csv(root / "Train.csv", index=False)
    pd.DataFrame({"ID": test_ids}).to_csv(root / "Test.csv", index=False)
    return train_ids, test_ids


def env_for(root: Path) -> dict[str, str]:
    """The environment of a command whose data and logs go under ``root``: W&B offline and quiet, no warnings."""
    return {**os.environ, "LANDSLIDE_ROOT": str(root), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
            "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """The data folder that ``debug=tiny`` makes on first use (the tiny release and the cache of its training split,
    features included), made once per worker by a real run of the filter stage. ``project_env`` starts each test's
    root with a copy of it (file times kept, so the cache's fingerprint holds): a test pays the generation only where
    it asks for a bare root."""
    import entry

    root = tmp_path_factory.mktemp("tiny_data")
    entry.run("train.py", "debug=tiny", "stage=filter", f"hydra.run.dir={root / 'run'}", env=env_for(root))
    return root / "data"


def seed_tiny_data(tiny_data: Path, root: Path) -> None:
    """Copy the tiny release and its cache into the project root ``root``."""
    shutil.copytree(tiny_data, root / "data")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_data) -> tuple[Path, dict]:
    """One tiny run (``debug=tiny data.fold=0``: fold 0 of 2, one epoch) and the environment it was made in, shared
    by the tests that only read it (copy it to change it)."""
    import entry

    root = tmp_path_factory.mktemp("tiny_run")
    seed_tiny_data(tiny_data, root)
    env = env_for(root)
    done = entry.run("train.py", "debug=tiny", "data.fold=0", f"hydra.run.dir={root / 'run'}", env=env, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root / "run", env


@pytest.fixture()
def bare_env(tmp_path) -> dict[str, str]:
    """Environment for running train.py / predict.py with data and logs under an empty temporary root: the first
    run there generates its data."""
    return env_for(tmp_path)


@pytest.fixture()
def project_env(bare_env, tiny_data, tmp_path) -> dict[str, str]:
    """``bare_env`` whose root already holds the data ``debug=tiny`` makes (see ``tiny_data``)."""
    seed_tiny_data(tiny_data, tmp_path)
    return bare_env
