"""What each overhead cut of a training run is worth, alone: ``python benchmarks/overheads.py [--device auto]``.

Each line times the old way and the new one of one step on the same data, with the device synchronised, and
prints both (the median of ``--repeats``) and their ratio; ``--out`` also gets them as JSON. The sizes are those of
the full recipe at release size (10 folds, 715 validation and about 6,400 training images a fold, batch 128 a
fold); ``--small`` scales them down for a CPU. Nothing here is asserted: the figures are measurements.

- augmentation: one stacked batch (10 folds x 128) through ``BatchAugment``, a ``torch.where`` per coin
  (``data.augment.dihedral_gather=false``) against one gather;
- validation scores: 10 folds' validation metrics with torchmetrics' functional metrics one fold after another
  (argument checks, a host copy per value) against ``landslide.metrics.binary_scores`` for all folds at once and
  one host copy;
- statistics: one fold's normalisation statistics in NumPy on the host (``data.stats_on_device=false``) against
  float64 sums on the device's resident copy;
- filters: 10 folds' XGBoost filters (the default config, 5 calibration folds) one after another against
  ``cv.parallel_filters=auto`` at once;
- checkpoint: a stacked 10-fold ``last.ckpt`` (weights and Adam's two moments) written on the training thread
  against the copy ``AsyncCheckpointIO`` makes there before its thread writes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_f1_score,
    binary_precision,
    binary_precision_recall_curve,
    binary_recall,
)

from landslide.data.augment import BatchAugment
from landslide.data.preprocess import channel_stats, resident_channel_stats
from landslide.metrics import binary_scores

AUGMENT = {"flip": True, "rotate": True, "erase_p": 0.5, "erase_scale": [0.02, 0.15], "erase_log_ratio": [-1.1, 1.1]}
#: the default filter, as train.py builds it (configs/filter/xgboost.yaml, seed 42)
FILTER_CONFIG = OmegaConf.merge(OmegaConf.load(Path(__file__).resolve().parents[1] / "configs" / "filter" /
                                               "xgboost.yaml"), {"seed": 42})
FILTER = OmegaConf.to_container(FILTER_CONFIG.params)


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up, the device synchronised."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    fn()
    times = []
    for _ in range(repeats):
        sync()
        started = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def old_scores(prob: torch.Tensor, y: torch.Tensor, sizes: list[int]) -> list[float]:
    """The validation metrics as the stacked module computed them before: torchmetrics, fold by fold."""
    values = []
    for k, n in enumerate(sizes):
        p, t = prob[k, :n], y[k, :n].int()
        precision, recall, thresholds = binary_precision_recall_curve(p, t)
        f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
        best = torch.argmax(f1[:-1])
        for value in (binary_f1_score(p, t), binary_precision(p, t), binary_recall(p, t), binary_auroc(p, t),
                      binary_average_precision(p, t), f1[best], thresholds[best]):
            values.append(float(value))  # Lightning copied each logged tensor to the host
    return values


def new_scores(prob: torch.Tensor, y: torch.Tensor, valid: torch.Tensor) -> list[float]:
    scores = binary_scores(prob, y, valid)
    return torch.stack(list(scores.values())).cpu().flatten().tolist()


def measure(device: torch.device, small: bool, repeats: int) -> dict[str, dict[str, float]]:
    folds, batch, val, train, n = (10, 128, 715, 6400, 7147) if not small else (4, 32, 200, 800, 1000)
    g = torch.Generator().manual_seed(0)
    out: dict[str, dict[str, float]] = {}

    x = torch.randn(folds * batch, 13, 64, 64, generator=g).to(device)
    fill = torch.randn(folds * batch, 13, generator=g).to(device)
    ways = {gather: BatchAugment(**AUGMENT, dihedral_gather=gather) for gather in (False, True)}
    out["augmentation (one stacked batch)"] = {
        "old_s": timed(lambda: ways[False](x, fill=fill), device, repeats),
        "new_s": timed(lambda: ways[True](x, fill=fill), device, repeats)}

    sizes = [val - k % 2 for k in range(folds)]
    prob = torch.rand(folds, val, generator=g).to(device)
    y = (torch.rand(folds, val, generator=g) < 0.17).float().to(device)
    valid = (torch.arange(val)[None] < torch.tensor(sizes)[:, None]).to(device)
    out["validation scores (all folds)"] = {"old_s": timed(lambda: old_scores(prob, y, sizes), device, repeats),
                                            "new_s": timed(lambda: new_scores(prob, y, valid), device, repeats)}

    images = torch.randn(n, 13, 64, 64, generator=g)
    index = np.sort(np.random.default_rng(0).choice(n, train, replace=False))
    resident = images.to(device)
    channels = [f"c{i}" for i in range(13)]
    out["statistics (one fold)"] = {
        "old_s": timed(lambda: channel_stats(images[torch.as_tensor(index)].numpy(), channels), device, repeats),
        "new_s": timed(lambda: resident_channel_stats(lambda rows: resident[torch.as_tensor(rows, device=device)],
                                                      index, channels), device, repeats)}

    rng = np.random.default_rng(1)
    feats = rng.normal(size=(n, 150)).astype(np.float32)
    labels = (feats[:, 0] + rng.normal(size=n) > 1.3).astype(int)
    parts = np.array_split(rng.permutation(n), folds)

    def fit(k: int) -> None:
        rows = np.concatenate([p for j, p in enumerate(parts) if j != k])
        instantiate(FILTER_CONFIG).fit(feats[rows], labels[rows])

    workers = max(1, min(folds, (os.cpu_count() or 1) // FILTER["n_jobs"]))

    def parallel() -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(fit, range(folds)))

    out[f"filters ({folds} folds, {workers} at once)"] = {
        "old_s": timed(lambda: [fit(k) for k in range(folds)], device, max(1, repeats // 3)),
        "new_s": timed(parallel, device, max(1, repeats // 3))}

    params = 721_000 * folds  # the seed's network (mm_fpn, experiment=reference_fast): the largest checkpoint, stacked
    state = {"state_dict": {"w": torch.randn(params, generator=g).to(device)},
             "optimizer": {"exp_avg": torch.randn(params, generator=g).to(device),
                           "exp_avg_sq": torch.rand(params, generator=g).to(device)}}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "last.ckpt"

        def write() -> None:
            buffer = io.BytesIO()
            torch.save(state, buffer)
            path.write_bytes(buffer.getvalue())

        def copy() -> None:  # what AsyncCheckpointIO does on the training thread
            {k: {n: t.detach().clone() for n, t in v.items()} for k, v in state.items()}

        out["checkpoint write (stacked last.ckpt)"] = {"old_s": timed(write, device, repeats),
                                                       "new_s": timed(copy, device, repeats),
                                                       "mb": round(3 * params * 4 / 1e6, 1)}
    for row in out.values():
        row["ratio"] = round(row["old_s"] / max(row["new_s"], 1e-9), 2)
        row["old_s"], row["new_s"] = round(row["old_s"], 5), round(row["new_s"], 5)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--small", action="store_true", help="CPU sizes (4 folds, batch 32, 1,000 images)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="a JSON file for the figures")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    device = torch.device("cuda" if cuda else "cpu")
    result = measure(device, args.small, args.repeats)
    print(f"{'step':40s} {'old s':>10s} {'new s':>10s} {'old/new':>8s}   ({device}, {os.cpu_count()} cores)")
    for name, row in result.items():
        print(f"{name:40s} {row['old_s']:10.4f} {row['new_s']:10.4f} {row['ratio']:8.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"device": str(device), **result}, indent=2))
    return result


if __name__ == "__main__":
    main()
