"""Generated releases in exactly the challenge layout: the project's embedded default data, the harder sets of the
accuracy benchmark, and test data.

A difficulty profile draws the patches (``easy``: :mod:`landslide.synth.easy`; ``realistic``, with confounders that
per-band statistics cannot separate from landslides: :mod:`landslide.synth.realistic`; the accuracy benchmark's
families ``small``, ``cloud``, ``optical``, ``large``, ``weak`` and ``offset``: :mod:`landslide.synth.families`;
``scenes``, windows cut from generated scenes: :mod:`landslide.synth.scenes`). ``label_noise`` flips that share of
the training labels (chosen at random, exactly ``round(share * n)`` of them). With ``masks`` (profiles that know
their slides' pixels: ``scenes``) the training patches' slide masks go into the release as ``train_masks/<ID>.npy``
(uint8 64 x 64, 1 on a slide), for pixel supervision (``experiment=segment``); a release without them reads as
before. The true labels are written beside the release, never in it: ``<out>_truth/test_labels.csv``
(``ID,label,kind``) and ``<out>_truth/train_truth.csv`` (``ID,label,true_label,kind``), so a benchmark can score a
submission while training, which reads only the release folder, cannot.

Run ``python -m landslide.synth --out DIR --n-train N --n-test M --seed S [--difficulty realistic]
[--label-noise 0.02] [--masks]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from landslide.files import write_json
from landslide.synth import easy, families, realistic, scenes

#: patches drawn and written per worker task
BATCH = 256
#: the release's folder of training masks (read by :mod:`landslide.data.masks`)
MASKS_FOLDER = "train_masks"


def make_ids(seed: int, split: str, n: int) -> list[str]:
    """Deterministic, unique, unordered IDs in the release's ``ID_XXXXXXXX`` style."""
    ids = [f"ID_{hashlib.sha1(f'{seed}:{split}:{i}'.encode()).hexdigest()[:8].upper()}" for i in range(n)]
    if len(set(ids)) != n:  # pragma: no cover - a hash collision in 8 hex digits
        raise RuntimeError("ID collision; choose another seed")
    return ids


class Profile(Protocol):
    """A difficulty profile (a module or an object): ``KINDS`` (scene kind names) and ``generate_batch(seed, n)``
    returning raw patches (n, 64, 64, 12), their true labels and scene kinds (indices into ``KINDS``)."""

    KINDS: tuple[str, ...]

    def generate_batch(self, seed: int | np.random.SeedSequence, n: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


#: The difficulty profiles, by name.
PROFILES: dict[str, Profile] = {"easy": easy, "realistic": realistic, "scenes": scenes, **families.PROFILES}
DIFFICULTIES = tuple(PROFILES)


def truth_dir(out: Path | str) -> Path:
    """The folder of true labels written beside a generated release (``<out>_truth``)."""
    out = Path(out)
    return out.with_name(f"{out.name}_truth")


def settings_file(out: Path | str) -> Path:
    """Where a generated release's settings are recorded (in its truth folder)."""
    return truth_dir(out) / "generated.json"


def kinds_of(difficulty: str) -> tuple[str, ...]:
    """Scene kind names of a difficulty."""
    return PROFILES[difficulty].KINDS


def masked(difficulty: str) -> bool:
    """True when the profile can give its patches' slide masks (``generate_masked_batch``)."""
    return hasattr(PROFILES[difficulty], "generate_masked_batch")


def _write_batch(args: tuple[np.random.SeedSequence, int, list[str], str, str, str | None]
                 ) -> tuple[np.ndarray, np.ndarray]:
    seed, n, ids, folder, difficulty, mask_folder = args
    if mask_folder:
        patches, labels, kind, masks = PROFILES[difficulty].generate_masked_batch(seed, n)
        for image_id, mask in zip(ids, masks):
            np.save(os.path.join(mask_folder, f"{image_id}.npy"), mask.astype(np.uint8))
    else:
        patches, labels, kind = PROFILES[difficulty].generate_batch(seed, n)
    for image_id, patch in zip(ids, patches):
        np.save(os.path.join(folder, f"{image_id}.npy"), patch)
    return labels, kind


def flip_labels(labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """``labels`` with exactly ``round(share * n)`` of them, chosen at random, flipped."""
    labels = np.asarray(labels).copy()
    wrong = np.random.default_rng([seed, 7]).choice(len(labels), round(share * len(labels)), replace=False)
    labels[wrong] = 1 - labels[wrong]
    return labels


def check_release_settings(n_train: int, n_test: int, difficulty: str, label_noise: float, masks: bool,
                           workers: int | None = None) -> None:
    """A ``ValueError`` naming the first setting :func:`generate_release` cannot write a release with."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, got {difficulty!r}")
    if masks and not masked(difficulty):
        raise ValueError(f"masks: the {difficulty} profile does not know its slides' pixels; "
                         f"use one of {', '.join(d for d in DIFFICULTIES if masked(d))}")
    if not 0 <= label_noise < 0.5:
        raise ValueError(f"label_noise must be in [0, 0.5) (a share of training labels), got {label_noise}")
    for name, count in (("n_train", n_train), ("n_test", n_test)):
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"{name} must be an integer >= 1 (patches to write), got {count!r}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")


def generate_release(out: Path | str, n_train: int, n_test: int, seed: int = 0, workers: int | None = None,
                     difficulty: str = "easy", label_noise: float = 0.0, masks: bool = False) -> dict:
    """Write ``Train.csv``, ``Test.csv``, ``train_data/`` and ``test_data/`` (and with ``masks`` ``train_masks/``)
    under ``out`` and the true labels in ``truth_dir(out)``; return a summary."""
    check_release_settings(n_train, n_test, difficulty, label_noise, masks, workers)
    out = Path(out)
    kinds_named = kinds_of(difficulty)
    workers = workers or min(4, os.cpu_count() or 1)
    split_seeds = np.random.SeedSequence(seed).spawn(2)
    truth = truth_dir(out)
    truth.mkdir(parents=True, exist_ok=True)
    summary: dict = {"difficulty": difficulty, "label_noise": label_noise}
    settings = {"n_train": n_train, "n_test": n_test, "seed": seed, "difficulty": difficulty,
                "label_noise": label_noise, "masks": masks}
    for (split, n, csv_name, folder_name), split_seed in zip(
        (("train", n_train, "Train.csv", "train_data"), ("test", n_test, "Test.csv", "test_data")), split_seeds
    ):
        folder = out / folder_name
        folder.mkdir(parents=True, exist_ok=True)
        mask_folder = out / MASKS_FOLDER if masks and split == "train" else None
        if mask_folder is not None:
            mask_folder.mkdir(parents=True, exist_ok=True)
        ids = make_ids(seed, split, n)
        starts = list(range(0, n, BATCH))
        seeds = split_seed.spawn(len(starts))
        jobs = [(s, min(BATCH, n - a), ids[a : a + BATCH], str(folder), difficulty,
                 str(mask_folder) if mask_folder else None) for s, a in zip(seeds, starts)]
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(workers) as pool:
                results = list(pool.map(_write_batch, jobs))
        else:
            results = [_write_batch(j) for j in jobs]
        labels = np.concatenate([r[0] for r in results]) if results else np.zeros(0, np.int64)
        kinds = np.concatenate([r[1] for r in results]) if results else np.zeros(0, np.int64)
        kind_names = [kinds_named[k] for k in kinds]
        if split == "train":
            given = flip_labels(labels, label_noise, seed)
            pd.DataFrame({"ID": ids, "label": given}).to_csv(out / csv_name, index=False)
            pd.DataFrame({"ID": ids, "label": given, "true_label": labels, "kind": kind_names}).to_csv(
                truth / "train_truth.csv", index=False)
        else:
            pd.DataFrame({"ID": ids}).to_csv(out / csv_name, index=False)
            pd.DataFrame({"ID": ids, "label": labels, "kind": kind_names}).to_csv(truth / "test_labels.csv",
                                                                                  index=False)
        summary[split] = {
            "n": n,
            "positives": int(labels.sum()),
            "kinds": {k: int((kinds == i).sum()) for i, k in enumerate(kinds_named)},
        }
    write_json(settings_file(out), settings, indent=1)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="release folder to write")
    parser.add_argument("--n-train", type=int, default=7147)
    parser.add_argument("--n-test", type=int, default=5398)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--difficulty", choices=DIFFICULTIES, default="easy")
    parser.add_argument("--label-noise", type=float, default=0.0, help="share of wrong training labels")
    parser.add_argument("--masks", action="store_true", help="write the training patches' slide masks (scenes)")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out}: a file; name a folder for the release")
    if args.out.is_dir() and any(args.out.iterdir()):
        parser.error(f"--out {args.out}: not empty; a release is written into a new (or empty) folder, so that no "
                     "file of another one is replaced or left beside it")
    started = time.perf_counter()
    try:
        summary = generate_release(args.out, args.n_train, args.n_test, args.seed, args.workers, args.difficulty,
                                   args.label_noise, args.masks)
    except ValueError as err:
        parser.error(str(err))
    elapsed = time.perf_counter() - started
    pos = summary["train"]["positives"]
    print(
        f"wrote {args.n_train} train ({pos} positive, {pos / max(args.n_train, 1):.1%}) and {args.n_test} test "
        f"patches ({args.difficulty}, {args.label_noise:.1%} wrong training labels) to {args.out} in "
        f"{elapsed:.1f}s; true labels in {truth_dir(args.out)}"
    )


if __name__ == "__main__":
    main()
