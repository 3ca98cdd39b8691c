"""Throughput and energy benchmark: ``python benchmarks/throughput.py [--device auto] [--full]``.

Run from a source checkout (``pip install -e .``); it uses the checkout's ``configs/`` and ``train.py``. Its data
and cache live in a temporary folder, removed when it ends (also on an error); ``bench.json`` goes to ``--out``.

In one run, on the same data and model, it measures
(a) a reference-style training loop: batch 32, per-sample augmentation in Python, fp32, deterministic kernels and a
    host copy of the predictions every step;
(b) the framework's own training path: ``lightning.Trainer.fit`` with ``LandslideDataModule`` and
    ``LandslideModule`` as ``train.py experiment=reference_fast`` builds them (the reference's network with the fast
    recipe's device-resident data, whole-batch augmentation, bf16 autocast, channels-last, ``torch.compile``);
(c) ensemble prediction: K models x 8 test-time views;
with ``--bounds`` (d) the framework's bare model step (no data path, no Lightning), the ceiling of (b);
with ``--stacked K`` K fold models trained at once (stacked weights, ``vmap``): their bare step, the bound, and
    ``Trainer.fit`` on ``training.stacked_module.StackedLandslideModule``, the path ``train.py`` takes on a GPU;
with ``--full`` (e) the full recipe end to end through ``train.py`` (wall time and CodeCarbon energy, the seconds
    of each phase of the run, and on a GPU its utilisation and power sampled with NVML or nvidia-smi; with
    ``cv.parallel_folds=auto`` the folds train stacked there).
The host allocator is tuned first, as ``train.py`` does, so every loop runs with it. Sizes scale down on a CPU;
every figure printed is measured in this run.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf
from torch.func import functional_call, stack_module_state
from torch.utils.data import DataLoader, Dataset

from landslide.callbacks.phases import batch_images
from landslide.cli import _quiet_third_parties
from landslide.data.datamodule import LandslideDataModule
from landslide.gpu_monitor import GpuMonitor
from landslide.hardware import tune_host_allocator
from landslide.prediction import predict_probs
from landslide.synth.release import generate_release
from landslide.timing import phase_table
from landslide.training.fold import build_datamodule, build_module
from landslide.training.stacked import FoldPart, StackedFoldsData
from landslide.training.stacked_module import StackedLandslideModule

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"
TRAIN_SCRIPT = REPO / "train.py"
TEMP_PREFIX = "landslide-bench-"


class PerSampleDataset(Dataset):
    """The reference's data path: one sample at a time, augmented with numpy in Python."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> None:
        self.images, self.labels = images, labels
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i].numpy().copy()
        if self.rng.random() < 0.5:
            x = x[:, :, ::-1]
        if self.rng.random() < 0.5:
            x = x[:, ::-1, :]
        x = np.rot90(x, int(self.rng.integers(4)), axes=(1, 2))
        if self.rng.random() < 0.5:  # patch erasing
            h, w = self.rng.integers(4, 20, 2)
            top, left = self.rng.integers(0, 64 - h), self.rng.integers(0, 64 - w)
            x[:, top : top + h, left : left + w] = 0
        return torch.from_numpy(np.ascontiguousarray(x)), self.labels[i]


def reference_loop(module, images, labels, device, seconds: float, batch_size: int) -> dict:
    """Images/s of the reference-style loop (fp32, deterministic, host sync each step), with the module's optimiser
    (``experiment=reference``'s: Adam, lr 1e-3, weight decay 1e-4) on every parameter."""
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    module = module.to(device).train()
    optimizer = module.optimizer_factory(module.parameters())
    loader = DataLoader(PerSampleDataset(images, labels), batch_size=batch_size, shuffle=True, drop_last=True)
    seen, steps, started, warm = 0, 0, None, 3
    while True:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits = module(x)
            loss = module.criterion(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            # the reference copied predictions and the loss to the host every step (a device sync)
            host_predictions = torch.sigmoid(logits.detach()).cpu().numpy()
            host_loss = loss.item()
            del host_predictions, host_loss
            steps += 1
            if steps == warm:
                started = time.perf_counter()
            elif steps > warm:
                seen += x.shape[0]
                if time.perf_counter() - started > seconds:
                    torch.backends.cudnn.deterministic = False
                    return {"images_per_s": seen / (time.perf_counter() - started), "batch_size": batch_size}


def bare_step(module, images, labels, device, precision: str, batch_size: int, seconds: float) -> dict:
    """Images/s of the framework's model step alone: one resident batch, no augmentation, no Lightning.

    An upper bound of the training path on this machine (what is left is the data path and Lightning's loop).
    """
    module = module.to(device).train()
    x, y = images[:batch_size].to(device), labels[:batch_size].to(device)
    rate = _optimizer_steps_per_s(lambda: module.criterion(module(x).float(), y), module.parameters(),
                                  module.optimizer_factory, device,
                                  precision, seconds)
    return {"images_per_s": rate * batch_size, "batch_size": batch_size}


def stacked_step(modules: list, images, labels, device, precision: str, batch_size: int, seconds: float,
                 compile: bool) -> dict:
    """Images/s of K fold models trained at once: weights stacked, one ``vmap``-ed step on K batches of
    ``batch_size``, one per model (no data path, no Lightning): the bound of the stacked path.
    """
    nets = [m.to(device).train().net for m in modules]
    params, buffers = stack_module_state(nets)
    skeleton = copy.deepcopy(nets[0]).to("meta")
    criterion = modules[0].criterion
    k = len(nets)
    index = torch.arange(k * batch_size) % len(images)
    x = modules[0].normalise(images[index].to(device)).view(k, batch_size, *images.shape[1:])
    y = labels[index].to(device).view(k, batch_size)

    def one_model_loss(p: dict, b: dict, xk: torch.Tensor, yk: torch.Tensor) -> torch.Tensor:
        return criterion(functional_call(skeleton, (p, b), (xk,)).float(), yk)

    losses = torch.vmap(one_model_loss, randomness="different")
    losses = torch.compile(losses) if compile else losses
    # a sum: each model gets the gradient of its own mean loss
    rate = _optimizer_steps_per_s(lambda: losses(params, buffers, x, y).sum(), params.values(),
                                  modules[0].optimizer_factory, device, precision,
                                  seconds)
    return {"images_per_s": rate * k * batch_size, "models": k, "batch_size": batch_size}


def _optimizer_steps_per_s(loss_fn, parameters, optimizer_factory, device: torch.device, precision: str,
                           seconds: float) -> float:
    """Optimiser steps (``model.optimizer``) a second on ``loss_fn()`` under the precision's autocast, after 3 steps
    of warm-up/compilation."""
    optimizer = optimizer_factory(parameters)
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16 if precision.startswith("16") else None

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = loss_fn()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    steps, started = 0, _synchronized(device)
    while _synchronized(device) - started < seconds:
        step()
        steps += 1
    return steps / (_synchronized(device) - started)


def _synchronized(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


class EpochTimer(Callback):
    """Wall time of each training epoch (validation disabled), synchronised with the device."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.images: list[int] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._start, self._n = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._n += batch_images(batch)  # a stacked batch is (folds, n, c, h, w)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._start)
        self.images.append(self._n)


def timed_fit(cfg, module: L.LightningModule, datamodule: L.LightningDataModule, epochs: int) -> tuple[float, int]:
    """Images/s of ``Trainer.fit`` over the epochs after the first (warm-up, compilation), and the epochs run."""
    timer = EpochTimer()
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=[timer], logger=False, enable_checkpointing=False,
                                     enable_progress_bar=False, limit_val_batches=0, max_epochs=epochs)
    trainer.fit(module, datamodule=datamodule)
    measured = slice(1, None) if len(timer.times) > 1 else slice(None)
    return sum(timer.images[measured]) / sum(timer.times[measured]), len(timer.times)


def framework_path(cfg, dm, epochs: int) -> dict:
    """Images/s of ``Trainer.fit`` as train.py runs it, over the epochs after the first (warm-up, compilation)."""
    dm.set_fold(0)
    module = build_module(cfg, dm)
    rate, run = timed_fit(cfg, module, dm, epochs)
    return {"images_per_s": rate, "batch_size": dm.batch_size, "epochs": run, "module": module}


def stacked_path(cfg, dm, k: int, epochs: int) -> dict:
    """Images/s of ``Trainer.fit`` on K folds at once (the stacked path train.py takes with cv.parallel_folds=K; no
    filter), over the epochs after the first."""
    parts, modules = [], []
    for fold in range(k):
        dm.set_fold(fold)
        modules.append(build_module(cfg, dm))
        parts.append(FoldPart(fold, Path("."), dm.train_index.copy(), dm.val_index.copy(),
                              np.ones(len(dm.val_index), bool), dm.epoch_seed, list(dm.norm_mean), None, {}))
    data = StackedFoldsData(dm, parts)
    stacked = StackedLandslideModule(modules, [len(p.val_index) for p in parts], list(range(k)))
    rate, run = timed_fit(cfg, stacked, data, epochs)
    return {"images_per_s": rate, "models": k, "epochs": run}


def prediction(module, images, device, models: int, batch_size: int) -> dict:
    """Images/s of ``models`` x 8-view prediction (one module reused K times, as the ensemble runs them)."""
    predict_probs(module, images[:batch_size], batch_size, True, device)  # warm-up
    started = _synchronized(device)
    for _ in range(models):
        predict_probs(module, images, batch_size, True, device)
    elapsed = time.perf_counter() - started
    return {"images_per_s": len(images) / elapsed, "seconds": elapsed, "models": models, "n": len(images),
            "batch_size": batch_size}


def full_recipe(root: Path, overrides: list[str], out: Path) -> dict:
    """The whole recipe through train.py; wall time and energy from its cv_summary.json, and where the seconds
    went: train.py's phases (its ``phases``, ``launch`` included: the interpreter, imports, Hydra and the preflight
    before the run began) and ``exit``, what the command took after its run ended (Hydra's job end, the
    interpreter's exit: this process's wall time of the command less train.py's own)."""
    run_dir = out / "full_recipe"
    cmd = [sys.executable, str(TRAIN_SCRIPT), f"data.root={root}",
           f"hydra.run.dir={run_dir}", "print_config=false", *overrides]
    started = time.perf_counter()
    with GpuMonitor() as gpu:  # utilisation and power beside wall time and energy (nothing on a CPU)
        subprocess.run(cmd, check=True)
    wall = time.perf_counter() - started
    summary = json.loads((run_dir / "cv_summary.json").read_text())
    phases = dict(summary.get("phases", {}))
    outside = "exit" if "launch" in phases else "launch"  # a train.py that could not time its launch: both
    phases[outside] = round(wall - summary["wall_seconds"], 3)
    training = phases.get("train_steps", 0.0)
    return {"wall_s": round(wall, 2), "energy_wh": summary["energy_wh"], "oof_f1": summary["oof_f1"],
            "f1_mean": summary["f1_mean"], "parallel_folds": len(summary["folds"][0].get("parallel_folds") or [0]),
            "run_dir_mb": summary.get("run_dir_mb"), "overrides": overrides, **gpu.summary(),
            # the share of the wall spent in training steps after the first (compilation is the first step's)
            "train_steps_share": round(training / wall, 3) if wall else None,
            # the training steps' own rate (train.py counts their batches' images; first steps left out)
            "train_step_images": summary.get("train_step_images"),
            "train_steps_images_per_s": summary.get("train_steps_images_per_s"), "phases": phases,
            # train.py's own GPU samples placed in its phases: utilisation and energy while the steps ran, ...
            "gpu_by_phase": (summary.get("gpu") or {}).get("phases")}


def print_phases(phases: dict[str, float], wall: float, gpu: dict[str, dict] | None = None) -> None:
    """The full recipe's seconds per phase, largest first (``other`` last), with their shares of the wall and, with
    ``gpu`` (train.py's GPU samples by phase), the GPU's mean utilisation and energy in each."""
    print(f"full recipe: where the {wall:.1f} s went" + ("  (GPU: mean utilisation, energy)" if gpu else ""))
    for name, seconds, share in phase_table(phases, wall):
        used = (gpu or {}).get(name)
        extra = f" {used['gpu_util_mean_pct']:6.0f}% {used['gpu_energy_wh']:7.2f} Wh" if used else ""
        print(f"  {name:14s} {seconds:9.2f} s {share:7.1%}{extra}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--n-train", type=int, default=None, help="images to train on (default: 7147 GPU, 600 CPU)")
    parser.add_argument("--n-test", type=int, default=None, help="images to predict (default: 5398 GPU, 300 CPU)")
    parser.add_argument("--seconds", type=float, default=None, help="time budget of the reference loop")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of the framework path (first = warm-up)")
    parser.add_argument("--models", type=int, default=10, help="ensemble size for the prediction figure")
    parser.add_argument("--compile", type=lambda v: v.lower() in ("1", "true", "yes"), default=None,
                        help="torch.compile the framework path (default: yes)")
    parser.add_argument("--bounds", action="store_true",
                        help="also time the framework's bare model step (no data path, no Lightning): an upper bound")
    parser.add_argument("--stacked", type=int, default=0, metavar="K",
                        help="also time K fold models trained at once (stacked weights, vmap): the bare step and "
                        "Trainer.fit on the stacked module")
    parser.add_argument("--full", action="store_true",
                        help="also run the full recipe through train.py (experiment=fast; on a CPU 2 folds x 1 epoch)")
    parser.add_argument("--only-full", action="store_true",
                        help="run the full recipe alone (implies --full; no loop timed): its wall, energy and phases")
    parser.add_argument("--full-overrides", nargs="*", default=None, help="train.py overrides for --full")
    parser.add_argument("--data-root", type=Path, default=None, help="an existing release to use")
    parser.add_argument("--out", type=Path, default=Path("logs/bench"), help="folder for bench.json")
    return parser.parse_args(argv)


@dataclass
class Plan:
    """What one run measures, sizes scaled to the device."""

    device: torch.device
    n_train: int
    n_test: int
    seconds: float  # the reference loop's time budget (the bare steps get half)
    epochs: int  # of each Trainer.fit path, the first a warm-up
    compile: bool
    recipe_overrides: list[str]  # the fast recipe on this device (--full)
    path_overrides: list[str]  # the framework path's: the reference's network with the fast recipe's speed settings

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def make_plan(args: argparse.Namespace) -> Plan:
    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    use_compile = args.compile is not False
    trainer = "trainer=gpu" if cuda else "trainer=cpu"
    # the loops compare ways of training one network: the reference loop's (experiment=reference) with the fast
    # recipe's speed settings (experiment=reference_fast: batch, precision, layout, compile); --full runs the fast
    # recipe itself (experiment=fast, the default network)
    return Plan(device=torch.device("cuda" if cuda else "cpu"), n_train=args.n_train or (7147 if cuda else 600),
                n_test=args.n_test or (5398 if cuda else 300), seconds=args.seconds or (20.0 if cuda else 15.0),
                epochs=args.epochs or (6 if cuda else 3), compile=use_compile,
                recipe_overrides=["experiment=fast", trainer],
                path_overrides=["experiment=reference_fast", trainer, f"model.compile={str(use_compile).lower()}"])


def release_root(args: argparse.Namespace, plan: Plan, work: Path) -> Path:
    """``--data-root``, or a release generated in ``work`` at the plan's size."""
    if args.data_root is not None:
        return args.data_root
    generate_release(work / "release", plan.n_train, plan.n_test, seed=0)
    return work / "release"


def prepare_data(args: argparse.Namespace, plan: Plan, work: Path
                 ) -> tuple[Path, DictConfig, DictConfig, LandslideDataModule]:
    """The release (``--data-root``, or one generated in ``work``), the framework path's config, the reference
    loop's (``experiment=reference``: its network, batch and optimiser, eager, default layout) and the framework
    path's datamodule (cache in ``work``)."""
    root = release_root(args, plan, work)
    common = [f"data.root={root}", f"data.cache_dir={work / 'cache'}", "data.progress=false",
              f"paths.output_dir={args.out}"]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*common, *plan.path_overrides])
        reference_cfg = compose("train", overrides=[*common, "experiment=reference", "model.channels_last=false",
                                                    "model.compile=false"])
    return root, cfg, reference_cfg, build_datamodule(cfg)


def measure_paths(cfg: DictConfig, reference_cfg: DictConfig, dm: LandslideDataModule, plan: Plan, models: int,
                  images, labels) -> tuple[dict, float]:
    """The reference loop, the framework path and ensemble prediction: the figures every run reports, and the
    reference loop's images/s (unrounded, the base of every speed-up)."""
    ref = reference_loop(build_module(reference_cfg, dm), images, labels, plan.device, plan.seconds,
                         int(reference_cfg.data.batch_size))
    ours = framework_path(cfg, dm, plan.epochs)
    module = ours.pop("module")
    pred = prediction(module, dm.gather("test", device=plan.device), plan.device, models,
                      int(cfg.data.eval_batch_size))
    return {
        "machine": machine_name(plan),
        "n_train": len(images), "n_test": pred["n"],
        "reference_loop_images_per_s": round(ref["images_per_s"], 1),
        "framework_images_per_s": round(ours["images_per_s"], 1),
        "speedup": round(ours["images_per_s"] / ref["images_per_s"], 2),
        "framework_batch_size": ours["batch_size"],
        # test images fully predicted per second, each through every model and all 8 views
        "prediction_images_per_s": round(pred["images_per_s"], 1),
        "prediction_seconds": round(pred["seconds"], 3),
        "prediction_models": models,
        "overrides": plan.path_overrides,
        "precision": OmegaConf.select(cfg, "trainer.precision"),
    }, ref["images_per_s"]


def machine_name(plan: Plan) -> str:
    if plan.cuda:
        return torch.cuda.get_device_name()
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _precision(cfg: DictConfig) -> str:
    return str(OmegaConf.select(cfg, "trainer.precision"))


def measure_bounds(cfg: DictConfig, dm: LandslideDataModule, plan: Plan, images, labels, reference: float) -> dict:
    """``--bounds``: the framework's bare model step, the ceiling of its training path."""
    bare = bare_step(build_module(cfg, dm), images, labels, plan.device, _precision(cfg),
                     int(cfg.data.batch_size), plan.seconds / 2)
    return {"bare_step_images_per_s": round(bare["images_per_s"], 1),
            "bare_step_speedup": round(bare["images_per_s"] / reference, 2)}


def measure_stacked(cfg: DictConfig, dm: LandslideDataModule, plan: Plan, k: int, images, labels,
                    reference: float) -> dict:
    """``--stacked K``: K fold models at once, their bare step and Trainer.fit on the stacked module."""
    stacked = stacked_step([build_module(cfg, dm) for _ in range(k)], images, labels, plan.device,
                           _precision(cfg), int(cfg.data.batch_size), plan.seconds / 2,
                           compile=plan.compile)
    path = stacked_path(cfg, dm, k, plan.epochs)
    return {"stacked_models": stacked["models"],
            "stacked_step_images_per_s": round(stacked["images_per_s"], 1),
            "stacked_step_speedup": round(stacked["images_per_s"] / reference, 2),
            "stacked_path_images_per_s": round(path["images_per_s"], 1),
            "stacked_path_speedup": round(path["images_per_s"] / reference, 2)}


def full_overrides(args: argparse.Namespace, plan: Plan) -> list[str]:
    """``--full``'s train.py overrides: ``--full-overrides``, else the fast recipe (on a CPU 2 folds x 1 epoch)."""
    if args.full_overrides is not None:
        return args.full_overrides
    return plan.recipe_overrides if plan.cuda else [*plan.recipe_overrides, "data.num_folds=2", "trainer.max_epochs=1"]


def benchmark(args: argparse.Namespace, work: Path, allocator: str) -> dict:
    """Every measurement ``args`` asks for, with data and cache in ``work``."""
    plan = make_plan(args)
    if args.only_full:  # the full recipe alone: no loops timed, no datamodule built here
        root = release_root(args, plan, work)
        return {"machine": machine_name(plan), "host_allocator": allocator,
                "full_recipe": full_recipe(root, full_overrides(args, plan), args.out)}
    root, cfg, reference_cfg, dm = prepare_data(args, plan, work)
    # the reference held its arrays in memory: give its loop a copy in RAM, not the cache's memory map
    images, labels = dm.gather("train").clone(), dm.labels_tensor
    result, reference = measure_paths(cfg, reference_cfg, dm, plan, args.models, images, labels)
    result["host_allocator"] = allocator
    if args.bounds:
        result.update(measure_bounds(cfg, dm, plan, images, labels, reference))
    if args.stacked:
        result.update(measure_stacked(cfg, dm, plan, args.stacked, images, labels, reference))
    if args.full:
        result["full_recipe"] = full_recipe(root, full_overrides(args, plan), args.out)
    return result


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    _quiet_third_parties()
    # as train.py does (tune_host_allocator=true); process-wide, so every loop below runs with it
    allocator = "tuned" if tune_host_allocator() else "glibc default"
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX, ignore_cleanup_errors=True) as work:
        result = benchmark(args, Path(work), allocator)
    (args.out / "bench.json").write_text(json.dumps(result, indent=2))
    for key, value in result.items():
        print(f"{key:32s} {value}")
    if "full_recipe" in result:
        full = result["full_recipe"]
        print_phases(full["phases"], full["wall_s"], full.get("gpu_by_phase"))
    return result


if __name__ == "__main__":
    main()
