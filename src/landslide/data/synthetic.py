"""Synthetic patches in exactly the challenge release layout: the project's embedded default data.

Each scene has land cover (vegetation, bare soil, water, urban) on smooth random fields, topography that
brightens slopes facing one SAR pass and darkens them for the other, speckled SAR in dB, and clouds that hide
the optical view. Scene kinds (shares of all images):

- ``positive`` (17.5%): 1-2 elongated fresh scars on vegetated land, seen in the post-event optical bands
  (bare, bright, low NIR) together with a backscatter drop in the diff bands at the same place;
- ``water`` and ``flat`` (18% and 17%): obvious negatives (open water; bare flats with no relief);
- ``old_scar`` (10%): a hard negative, an old scar in the optical bands with no SAR change;
- ``change_only`` (10%): a hard negative, a compact SAR change (harvest, works) with no optical scar;
- ``plain`` (the rest): mixed landscapes without events.

This is the ``easy`` difficulty; ``realistic`` (``landslide.data.realistic``) adds confounders that per-band
statistics cannot separate from landslides. ``label_noise`` flips that share of the training labels (chosen at
random, exactly ``round(share * n)`` of them). The true labels are written beside the release, never in it:
``<out>_truth/test_labels.csv`` (``ID,label,kind``) and ``<out>_truth/train_truth.csv`` (``ID,label,true_label,
kind``), so a benchmark can score a submission while training, which reads only the release folder, cannot.

Run ``python -m landslide.data.synthetic --out DIR --n-train N --n-test M --seed S [--difficulty realistic]
[--label-noise 0.02]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from landslide.bands import PATCH_SIZE, RAW_NAMES, raw_index

KINDS = ("positive", "water", "flat", "old_scar", "change_only", "plain")
KIND_SHARES = (0.175, 0.18, 0.17, 0.10, 0.10, 0.275)
VEG, BARE, WATER, URBAN = 0, 1, 2, 3
#: Surface reflectance x 10000 (red, green, blue, NIR) per land-cover class.
OPTICAL = np.array(
    [[550, 850, 480, 3300], [2300, 2000, 1700, 2700], [450, 650, 800, 250], [1900, 1800, 1750, 2100]],
    np.float64,
)
FRESH_SCAR = np.array([2700, 2400, 2100, 2300], np.float64)
CLOUD = np.array([6400, 6500, 6700, 6900], np.float64)
#: Mean backscatter in dB (VV, VH) per land-cover class.
BACKSCATTER = np.array([[-9.0, -15.5], [-13.0, -21.0], [-22.0, -28.0], [-3.0, -9.5]], np.float64)
BATCH = 256
#: ``(seed, n) -> (patches (n, 64, 64, 12), labels (n,), kind indices (n,))``: a generator of patches
BatchMaker = Callable[[np.random.SeedSequence, int], tuple[np.ndarray, np.ndarray, np.ndarray]]


def _interp_matrix(coarse: int, size: int = PATCH_SIZE) -> np.ndarray:
    """(size, coarse) linear interpolation weights from a coarse grid to ``size`` pixels."""
    pos = np.linspace(0, coarse - 1, size)
    low = np.floor(pos).astype(int).clip(0, coarse - 2)
    frac = pos - low
    m = np.zeros((size, coarse))
    m[np.arange(size), low] = 1 - frac
    m[np.arange(size), low + 1] = frac
    return m


_INTERP = {k: _interp_matrix(k) for k in (4, 6, 9, 17)}


def smooth_field(rng: np.random.Generator, n: int, scales: tuple[int, ...] = (4, 9, 17)) -> np.ndarray:
    """(n, 64, 64) smooth random fields of roughly unit variance (sum of upsampled coarse noise)."""
    out = np.zeros((n, PATCH_SIZE, PATCH_SIZE))
    for i, k in enumerate(scales):
        m = _INTERP[k]
        z = rng.standard_normal((n, k, k))
        out += np.einsum("ik,nkl,jl->nij", m, z, m, optimize=True) * 0.6**i
    return out / out.std(axis=(1, 2), keepdims=True).clip(1e-6)


def _ellipses(rng, n, count, half_len, half_wid, margin=10) -> np.ndarray:
    """(n, 64, 64) boolean masks of up to ``count`` rotated, ragged ellipses per image."""
    yy, xx = np.mgrid[0:PATCH_SIZE, 0:PATCH_SIZE].astype(np.float64)
    ragged = 0.35 * smooth_field(rng, n, (6, 17))
    mask = np.zeros((n, PATCH_SIZE, PATCH_SIZE), bool)
    counts = rng.integers(1, count + 1, n)
    for c in range(count):
        cx, cy = rng.uniform(margin, PATCH_SIZE - margin, (2, n))
        a = rng.uniform(*half_len, n)
        b = rng.uniform(*half_wid, n)
        theta = rng.uniform(0, np.pi, n)
        cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
        dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]
        u = (dx * cos + dy * sin) / a[:, None, None]
        v = (-dx * sin + dy * cos) / b[:, None, None]
        # taper: scars narrow towards their toe, like a debris tongue
        v = v * (1 + 0.4 * u.clip(-1, 1))
        one = (u**2 + v**2) < 1 + ragged
        mask |= one & (c < counts)[:, None, None]
    return mask


def _speckle_db(rng, shape, looks: float = 5.0) -> np.ndarray:
    return 10 * np.log10(rng.gamma(looks, 1 / looks, shape))


def generate_batch(seed: int | np.random.SeedSequence, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` raw patches (n, 64, 64, 12) float64, their labels and scene kinds (indices into ``KINDS``)."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(len(KINDS), n, p=KIND_SHARES)
    patches, labels, _ = draw_patches(rng, kind)
    return patches, labels, kind


def draw_patches(rng: np.random.Generator, kind: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw patches (n, 64, 64, 12) float64 of the given kinds (indices into ``KINDS``), their labels and the
    (n, 64, 64) masks of their fresh landslide scars."""
    n = len(kind)
    is_ = {k: kind == KINDS.index(k) for k in KINDS}
    f1, f2, f3, topo = (smooth_field(rng, n) for _ in range(4))

    cover = np.full((n, PATCH_SIZE, PATCH_SIZE), VEG)
    cover[f1 > 1.0] = BARE
    cover[f1 < -1.3] = WATER
    cover[f2 > 1.5] = URBAN
    water_scene = is_["water"][:, None, None]
    flat_scene = is_["flat"][:, None, None]
    cover = np.where(water_scene, np.where(f1 < 0.6, WATER, BARE), cover)
    cover = np.where(flat_scene, np.where(f1 < -1.8, WATER, BARE), cover)
    relief = np.where(is_["water"] | is_["flat"], 0.15, rng.uniform(0.6, 1.4, n))[:, None, None] * topo

    # optical surface
    brightness = rng.uniform(0.85, 1.15, (n, 1, 1, 1))
    optical = OPTICAL[cover] * brightness * (1 + 0.08 * f3[..., None])
    optical *= 1 + 0.05 * rng.standard_normal(optical.shape)

    # events
    scar = _ellipses(rng, n, 2, (7, 18), (2.0, 4.5)) & (is_["positive"] | is_["old_scar"])[:, None, None]
    blob = _ellipses(rng, n, 1, (4, 8), (4, 8)) & is_["change_only"][:, None, None]
    fresh = scar & is_["positive"][:, None, None]
    old = scar & is_["old_scar"][:, None, None]
    optical[fresh] = FRESH_SCAR * (1 + 0.07 * rng.standard_normal((int(fresh.sum()), 4)))
    old_look = 0.55 * FRESH_SCAR + 0.45 * OPTICAL[VEG]
    optical[old] = old_look * (1 + 0.07 * rng.standard_normal((int(old.sum()), 4)))

    # clouds hide the optical view in about a third of the scenes
    cloudy = rng.random(n) < 0.33
    cover_level = rng.uniform(-1.5, 1.2, n)[:, None, None]
    alpha = np.clip((smooth_field(rng, n, (4, 9)) - cover_level) * 1.5, 0, 1) * cloudy[:, None, None]
    cloud = CLOUD * rng.uniform(0.9, 1.15, (n, 1, 1, 1)) * (1 + 0.03 * rng.standard_normal(optical.shape))
    optical = (1 - alpha[..., None]) * optical + alpha[..., None] * cloud
    optical = optical.clip(1, 15000)

    # SAR: the same surface seen from two passes; slopes facing a pass are brighter, the others darker
    change = fresh | blob
    out = np.empty((n, PATCH_SIZE, PATCH_SIZE, len(RAW_NAMES)))
    out[..., [raw_index(b) for b in ("red", "green", "blue", "nir")]] = optical
    for orbit, facing in (("desc", 1.0), ("asc", -1.0)):
        base = BACKSCATTER[cover] + (facing * 2.5 * relief)[..., None]
        base[..., 0] += 0.8 * facing  # a small mean offset between the passes, as in the release
        seen = rng.uniform(0.5, 1.0, (n, 1, 1, 1))  # layover/shadow weakens the change in some passes
        drop = np.stack([rng.uniform(-3.5, -1.5, n), rng.uniform(-6.5, -3.5, n)], -1)[:, None, None, :]
        post_true = base + change[..., None] * drop * seen
        post = post_true + _speckle_db(rng, base.shape)
        pre = base + _speckle_db(rng, base.shape)
        out[..., raw_index(f"{orbit}_vv")] = post[..., 0]
        out[..., raw_index(f"{orbit}_vh")] = post[..., 1]
        out[..., raw_index(f"{orbit}_diff_vv")] = post[..., 0] - pre[..., 0]
        out[..., raw_index(f"{orbit}_diff_vh")] = post[..., 1] - pre[..., 1]
    labels = is_["positive"].astype(np.int64)
    return out, labels, fresh


def make_ids(seed: int, split: str, n: int) -> list[str]:
    """Deterministic, unique, unordered IDs in the release's ``ID_XXXXXXXX`` style."""
    ids = [f"ID_{hashlib.sha1(f'{seed}:{split}:{i}'.encode()).hexdigest()[:8].upper()}" for i in range(n)]
    if len(set(ids)) != n:  # pragma: no cover - a hash collision in 8 hex digits
        raise RuntimeError("ID collision; choose another seed")
    return ids


DIFFICULTIES = ("easy", "realistic")


def truth_dir(out: Path | str) -> Path:
    """The folder of true labels written beside a generated release (``<out>_truth``)."""
    out = Path(out)
    return out.with_name(f"{out.name}_truth")


def kinds_of(difficulty: str) -> tuple[str, ...]:
    """Scene kind names of a difficulty."""
    if difficulty == "easy":
        return KINDS
    from landslide.data.realistic import KINDS as REALISTIC_KINDS

    return REALISTIC_KINDS


def _write_batch(args: tuple[np.random.SeedSequence, int, list[str], str, str, BatchMaker | None]
                 ) -> tuple[np.ndarray, np.ndarray]:
    seed, n, ids, folder, difficulty, batch = args
    if batch is not None:
        patches, labels, kind = batch(seed, n)
    elif difficulty == "easy":
        patches, labels, kind = generate_batch(seed, n)
    else:
        from landslide.data.realistic import generate_batch as realistic_batch

        patches, labels, kind = realistic_batch(seed, n)
    for image_id, patch in zip(ids, patches):
        np.save(os.path.join(folder, f"{image_id}.npy"), patch)
    return labels, kind


def flip_labels(labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """``labels`` with exactly ``round(share * n)`` of them, chosen at random, flipped."""
    labels = np.asarray(labels).copy()
    wrong = np.random.default_rng([seed, 7]).choice(len(labels), round(share * len(labels)), replace=False)
    labels[wrong] = 1 - labels[wrong]
    return labels


def generate_release(out: Path | str, n_train: int, n_test: int, seed: int = 0, workers: int | None = None,
                     difficulty: str = "easy", label_noise: float = 0.0, *, batch: BatchMaker | None = None,
                     kinds: Sequence[str] | None = None) -> dict:
    """Write ``Train.csv``, ``Test.csv``, ``train_data/`` and ``test_data/`` under ``out`` and the true labels in
    ``truth_dir(out)``; return a summary.

    ``batch`` (a picklable ``(seed, n) -> (patches, labels, kind indices)``, e.g. a family of
    :mod:`landslide.synth.families`) with its ``kinds`` (names) draws the patches instead of ``difficulty``'s
    generator; ``difficulty`` then only names them in the summary."""
    if (batch is None) != (kinds is None):
        raise ValueError("batch and kinds go together")
    if batch is None and difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, got {difficulty!r}")
    if not 0 <= label_noise < 0.5:
        raise ValueError(f"label_noise must be in [0, 0.5) (a share of training labels), got {label_noise}")
    out = Path(out)
    kinds_named = tuple(kinds) if kinds is not None else kinds_of(difficulty)
    workers = workers or min(4, os.cpu_count() or 1)
    split_seeds = np.random.SeedSequence(seed).spawn(2)
    truth = truth_dir(out)
    truth.mkdir(parents=True, exist_ok=True)
    summary: dict = {"difficulty": difficulty, "label_noise": label_noise}
    for (split, n, csv_name, folder_name), split_seed in zip(
        (("train", n_train, "Train.csv", "train_data"), ("test", n_test, "Test.csv", "test_data")), split_seeds
    ):
        folder = out / folder_name
        folder.mkdir(parents=True, exist_ok=True)
        ids = make_ids(seed, split, n)
        starts = list(range(0, n, BATCH))
        seeds = split_seed.spawn(len(starts))
        jobs = [(s, min(BATCH, n - a), ids[a : a + BATCH], str(folder), difficulty, batch)
                for s, a in zip(seeds, starts)]
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
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        summary = generate_release(args.out, args.n_train, args.n_test, args.seed, args.workers, args.difficulty,
                                   args.label_noise)
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
