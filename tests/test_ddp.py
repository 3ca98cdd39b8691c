"""Several processes train one run (Lightning's DDP strategy, gloo on the CPU): each rank draws its own images,
rank zero alone writes, and the result matches a one-process run with the same global batch."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from sklearn.metrics import roc_auc_score

import entry
from conftest import REPO
from landslide.checkpoint import load_module
from landslide.data.batches import IndexBatches
from landslide.errors import ConfigError
from landslide.training.cv import parallel_folds
from landslide.training.ranks import planned_processes

TINY = ("debug=tiny", "trainer.max_epochs=2", "cv.parallel_folds=1", "print_config=false")
DDP = ("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")


def as_rank(batches: IndexBatches, rank: int, world: int) -> IndexBatches:
    batches.rank_source = lambda: (rank, world)
    return batches


def test_each_rank_takes_its_own_part_of_every_global_batch():
    indices = np.arange(100, 356)  # 8 global batches of 32: each epoch one permutation
    ranks = [as_rank(IndexBatches("train", indices, 16, shuffle=True, seed=5), r, 2) for r in (0, 1)]
    alone = IndexBatches("train", indices, 32, shuffle=True, seed=5)  # one process, the same global batch
    assert len(ranks[0]) == len(ranks[1]) == len(alone) == 8
    for epoch in (0, 3):
        for r in ranks:
            r.epoch = epoch
        alone.epoch = epoch
        steps = zip(*(list(r) for r in ranks), list(alone), strict=True)
        for part0, part1, whole in steps:
            a, b = part0["index"], part1["index"]
            assert len(a) == len(b) == 16 and not set(a.tolist()) & set(b.tolist())
            assert torch.equal(torch.cat([a, b]), whole["index"])


def test_ranks_split_the_validation_images_once():
    indices = np.arange(37)
    parts = [torch.cat([b["index"] for b in as_rank(IndexBatches("train", indices, 8, False), r, 2)])
             for r in (0, 1)]
    assert torch.equal(torch.cat(parts), torch.arange(37)) and abs(len(parts[0]) - len(parts[1])) <= 1


def test_a_small_training_set_never_repeats_an_image_within_a_step():
    ranks = [as_rank(IndexBatches("train", np.arange(10), 32, shuffle=True), r, 2) for r in (0, 1)]
    for a, b in zip(*ranks, strict=True):
        assert len(a["index"]) == len(b["index"]) == 5 and not set(a["index"].tolist()) & set(b["index"].tolist())


def compose_train(*overrides: str):
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_planned_processes_follow_the_trainer_config():
    assert planned_processes(compose_train()) == 1
    assert planned_processes(compose_train(*DDP)) == 2
    assert planned_processes(compose_train(*DDP, "trainer.num_nodes=2")) == 4
    assert planned_processes(compose_train("trainer=ddp", "trainer.devices=[0,1,2]")) == 3
    assert planned_processes(compose_train("trainer=ddp", "trainer.accelerator=cpu")) == 1  # auto on a CPU
    assert planned_processes(compose_train("trainer.devices=2")) == 1  # no DDP strategy named


def test_stacked_folds_are_refused_with_several_processes():
    assert parallel_folds(compose_train(*DDP), 2) == 1  # auto: one fold at a time over the devices
    with pytest.raises(ConfigError, match="cv.parallel_folds=2 .*folds as jobs"):
        parallel_folds(compose_train(*DDP, "cv.parallel_folds=2"), 2)


def files_of(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}


def seen(folder: Path, rank: int) -> pd.DataFrame:
    return pd.DataFrame([json.loads(line) for line in (folder / f"rank{rank}.jsonl").read_text().splitlines()])


@pytest.mark.slow  # two real interpreters (about 40 s on 2 cores); CI runs it after the suite
def test_two_processes_train_one_run(project_env, tmp_path):
    env = {**project_env, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "helpers"), project_env.get("PYTHONPATH", "")])}
    ddp, single, notes = tmp_path / "ddp", tmp_path / "single", tmp_path / "seen"
    # 2 processes x 16 images per step, against 1 process x 32: the same global batch and step count, fold 1 of 2
    # a real interpreter: Lightning starts the second process by running its command line again
    entry.run("train.py", *TINY, *DDP, "data.fold=1", "data.batch_size=16", f"hydra.run.dir={ddp}",
              "+callbacks.seen._target_=seen_batches.SeenBatches", f"+callbacks.seen.folder={notes}", env=env,
              process=True)
    entry.run("train.py", *TINY, "data.fold=1", "data.batch_size=32", f"hydra.run.dir={single}", env=env)

    # every rank trained on its own images, and the ranks validated disjoint parts of the fold
    rank0, rank1 = seen(notes, 0), seen(notes, 1)
    assert (rank0.world == 2).all() and len(rank0) == len(rank1)
    oof = pd.read_csv(ddp / "oof_predictions.csv")
    for a, b in zip(rank0.itertuples(), rank1.itertuples(), strict=True):
        assert (a.run, a.stage, a.step) == (b.run, b.stage, b.step)
        assert not set(a.index) & set(b.index)
    parts = []  # fold 1's validation images, as each rank saw them
    for notes_of_rank in (rank0, rank1):
        val = notes_of_rank[(notes_of_rank.stage == "val") & notes_of_rank.run.str.endswith("fold_1")]
        parts.append([i for batch in val[val.epoch == 0]["index"] for i in batch])
    assert len(parts[0]) + len(parts[1]) == len(oof) == int((oof.fold == 1).sum())
    assert not set(parts[0]) & set(parts[1])

    # one set of files: rank zero wrote everything; the other process left its log only
    assert files_of(ddp) - files_of(single) == {"train_ddp_process_1.log"}
    assert files_of(single) - files_of(ddp) == set()
    summary = json.loads((ddp / "cv_summary.json").read_text())
    assert summary["invocations"] == 1 and len(json.loads((ddp / "run.json").read_text())["invocations"]) == 1
    for name in ("emissions.csv", "folds/fold_1/emissions.csv"):  # one CodeCarbon tracker each, as in one process
        assert len(pd.read_csv(ddp / name)) == len(pd.read_csv(single / name))
    assert load_module(ddp / "folds" / "fold_1" / "model.ckpt").channels and not (ddp / "folds" / "fold_0").exists()

    # the result matches one process within the noise of two epochs on tiny data
    reference = json.loads((single / "cv_summary.json").read_text())
    alone = pd.read_csv(single / "oof_predictions.csv")
    auc = [roc_auc_score(o.label, o.prob) for o in (oof, alone)]
    assert abs(auc[0] - auc[1]) < 0.1 and abs(summary["oof_f1"] - reference["oof_f1"]) < 0.15, (auc, summary)


def test_ddp_inside_a_local_multirun_is_refused(bare_env, tmp_path):
    done = entry.run("train.py", "-m", *TINY, *DDP, f"hydra.sweep.dir={tmp_path / 'sweep'}", env=bare_env,
                     check=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "cannot run inside a local multirun" in output, output[-3000:]
    assert not list(tmp_path.rglob("model.ckpt"))
