"""The ``realistic`` difficulty of the synthetic generator: confounders that per-band statistics cannot separate
from landslides, so that only the shape and co-location of an optical scar and a SAR change tell them apart.

Scene kinds (shares of all images, about 18% positive):

- ``positive``: 1-3 fresh scars, large, small or thin, more or less bare, with a backscatter change of random
  strength at the same place (weak in both passes for some); a quarter also hold a harvested field, and
  clouds hide the scar in some;
- ``water``, ``flat``: obvious negatives;
- ``old_scar``: a revegetating scar of landslide shape with no SAR change;
- ``change_only``: a compact SAR change (works, wet soil) with no scar;
- ``harvest``: rectangular fields, bare in the optical bands, with a SAR change at the same place;
- ``urban_change``: construction in a town, brighter in both modalities;
- ``decoy``: an old scar and an unrelated SAR change elsewhere in the patch;
- ``plain``: mixed landscapes without events.

Every patch has its own optical gain and haze, its own SAR calibration offset per pass, and a small calibration
difference between the pre- and post-event acquisitions, so absolute levels carry little information.
"""

from __future__ import annotations

import numpy as np

from landslide.bands import PATCH_SIZE, RAW_NAMES, raw_index
from landslide.synth.fields import (
    BACKSCATTER,
    BARE,
    CLOUD,
    FRESH_SCAR,
    OPTICAL,
    URBAN,
    VEG,
    WATER,
    ellipses,
    smooth_field,
    speckle_db,
)

KINDS = ("positive", "water", "flat", "old_scar", "change_only", "harvest", "urban_change", "decoy", "plain")
KIND_SHARES = (0.18, 0.15, 0.08, 0.13, 0.08, 0.10, 0.04, 0.11, 0.13)
HAZE = np.array([1.0, 0.9, 0.8, 0.5])


def _rectangles(rng: np.random.Generator, n: int, count: int, half_len: tuple, half_wid: tuple) -> np.ndarray:
    """(n, 64, 64) masks of up to ``count`` rotated rectangles (fields: straight edges, sharp corners)."""
    yy, xx = np.mgrid[0:PATCH_SIZE, 0:PATCH_SIZE].astype(np.float64)
    mask = np.zeros((n, PATCH_SIZE, PATCH_SIZE), bool)
    counts = rng.integers(1, count + 1, n)
    for c in range(count):
        cx, cy = rng.uniform(8, PATCH_SIZE - 8, (2, n))
        a, b = rng.uniform(*half_len, n), rng.uniform(*half_wid, n)
        theta = rng.uniform(0, np.pi, n)
        cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
        dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]
        u, v = (dx * cos + dy * sin), (-dx * sin + dy * cos)
        one = (np.abs(u) < a[:, None, None]) & (np.abs(v) < b[:, None, None])
        mask |= one & (c < counts)[:, None, None]
    return mask


def _scars(rng: np.random.Generator, n: int) -> np.ndarray:
    """Landslide-shaped masks: large, small (up to 3) or thin scars, never fewer than 8 pixels."""
    large = ellipses(rng, n, 2, (7, 18), (2.0, 4.5))
    small = ellipses(rng, n, 3, (3, 7), (1.5, 3.0))
    thin = ellipses(rng, n, 2, (9, 20), (1.1, 1.8))
    size = rng.choice(3, n, p=(0.6, 0.2, 0.2))[:, None, None]
    mask = np.where(size == 0, large, np.where(size == 1, small, thin))
    too_small = mask.sum(axis=(1, 2)) < 8
    mask[too_small] = large[too_small]
    return mask


def _blend(optical: np.ndarray, where: np.ndarray, look: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Blend ``look`` (n, 4) into ``optical`` inside ``where`` (n, 64, 64) with per-image opacity ``alpha``."""
    a = (where * alpha[:, None, None])[..., None]
    return optical * (1 - a) + look[:, None, None, :] * a


def generate_batch(seed: int | np.random.SeedSequence, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` raw patches (n, 64, 64, 12) float64, their (true) labels and scene kinds (indices into ``KINDS``)."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(len(KINDS), n, p=KIND_SHARES)
    is_ = {k: kind == KINDS.index(k) for k in KINDS}
    f1, f2, f3, topo = (smooth_field(rng, n) for _ in range(4))
    col = (slice(None), None, None)

    # mixed land cover with per-patch proportions
    # landslides strike vegetated slopes: their scenes hold less bare soil and water, and more relief
    positive = is_["positive"]
    cover = np.full((n, PATCH_SIZE, PATCH_SIZE), VEG)
    cover[f1 > np.where(positive, rng.uniform(1.2, 2.2, n), rng.uniform(0.5, 1.6, n))[col]] = BARE
    cover[f1 < np.where(positive, rng.uniform(-2.8, -1.8, n), rng.uniform(-2.2, -1.2, n))[col]] = WATER
    cover[f2 > rng.uniform(1.0, 2.2, n)[col]] = URBAN
    cover = np.where(is_["water"][col], np.where(f1 < rng.uniform(0.0, 1.0, n)[col], WATER, cover), cover)
    cover = np.where(is_["flat"][col], np.where(f1 < -1.8, WATER, BARE), cover)
    town = ellipses(rng, n, 1, (10, 20), (8, 14)) & is_["urban_change"][col]
    cover[town] = URBAN
    relief = np.where(is_["water"] | is_["flat"], 0.15, rng.uniform(0.4, 1.6, n))
    relief = np.where(positive, rng.uniform(0.8, 1.6, n), relief)[col] * topo

    optical = OPTICAL[cover] * (1 + 0.1 * f3[..., None])
    optical *= 1 + 0.06 * rng.standard_normal(optical.shape)

    # events
    scar = _scars(rng, n)
    fresh = scar & positive[col]
    old = scar & (is_["old_scar"] | is_["decoy"])[col]
    fields = _rectangles(rng, n, 3, (6, 16), (4, 10))
    fields &= (is_["harvest"] | (positive & (rng.random(n) < 0.25)))[col] & ~fresh
    blob = ellipses(rng, n, 1, (3, 8), (3, 8))
    blob &= (is_["change_only"] | is_["decoy"] | is_["urban_change"])[col]
    blob &= ~old

    fresh_look = FRESH_SCAR * rng.uniform(0.8, 1.15, (n, 1))
    optical = _blend(optical, fresh, fresh_look, rng.uniform(0.55, 1.0, n))
    old_look = FRESH_SCAR * rng.uniform(0.75, 1.05, (n, 1))
    optical = _blend(optical, old, old_look, rng.uniform(0.3, 0.8, n))
    t = rng.uniform(0, 1, (n, 1))
    field_look = (t * OPTICAL[BARE] + (1 - t) * FRESH_SCAR) * rng.uniform(0.85, 1.1, (n, 1))
    optical = _blend(optical, fields, field_look, rng.uniform(0.6, 1.0, n))
    works = blob & is_["urban_change"][col]
    optical = _blend(optical, works, OPTICAL[URBAN] * rng.uniform(1.1, 1.5, (n, 1)), np.ones(n))
    optical *= 1 + 0.06 * rng.standard_normal(optical.shape) * (fresh | old | fields)[..., None]

    # per-patch radiometry: gain per band around a common one, haze
    gain = rng.uniform(0.75, 1.25, (n, 1, 1, 1)) * rng.uniform(0.92, 1.08, (n, 1, 1, 4))
    optical = optical * gain + rng.uniform(0, 500, (n, 1, 1, 1)) * HAZE

    # clouds: a third of the scenes, opaque or thin; one positive in eight has a thick cloud on the scar
    cloudy = rng.random(n) < 0.35
    level = rng.uniform(-1.5, 1.2, n)[col]
    alpha = np.clip((smooth_field(rng, n, (4, 9)) - level) * 1.5, 0, 1) * rng.uniform(0.4, 1.0, n)[col]
    alpha *= cloudy[col]
    over_scar = positive & (rng.random(n) < 0.18)
    alpha = np.where(over_scar[col], np.maximum(alpha, fresh * 1.0), alpha)
    cloud = CLOUD * rng.uniform(0.9, 1.15, (n, 1, 1, 1)) * (1 + 0.03 * rng.standard_normal(optical.shape))
    optical = ((1 - alpha[..., None]) * optical + alpha[..., None] * cloud).clip(1, 15000)

    # SAR: a drop where the ground was stripped (scars, fields, works), a rise where a town grew
    drop_where = fresh | fields | (blob & ~is_["urban_change"][col])
    rise_where = blob & is_["urban_change"][col]
    weak = positive & (rng.random(n) < 0.14)
    out = np.empty((n, PATCH_SIZE, PATCH_SIZE, len(RAW_NAMES)))
    out[..., [raw_index(b) for b in ("red", "green", "blue", "nir")]] = optical
    for orbit, facing in (("desc", 1.0), ("asc", -1.0)):
        base = BACKSCATTER[cover] + (facing * 2.5 * relief)[..., None]
        base[..., 0] += 0.8 * facing
        base = base + rng.normal(0, 1.5, (n, 1, 1, 1))  # per-patch calibration offset
        seen = np.where(weak, rng.uniform(0.1, 0.4, n), rng.uniform(0.5, 1.0, n))[:, None, None, None]
        drop = np.stack([rng.uniform(-4.0, -1.5, n), rng.uniform(-7.0, -3.0, n)], -1)[:, None, None, :]
        rise = np.stack([rng.uniform(2.0, 5.0, n), rng.uniform(1.5, 4.0, n)], -1)[:, None, None, :]
        bias = rng.normal(0, 0.3, (n, 1, 1, 2))  # calibration difference between the two acquisitions
        post_true = base + drop_where[..., None] * drop * seen + rise_where[..., None] * rise + bias
        post = post_true + speckle_db(rng, base.shape, 5.0)
        pre = base + speckle_db(rng, base.shape, 5.0)
        out[..., raw_index(f"{orbit}_vv")] = post[..., 0]
        out[..., raw_index(f"{orbit}_vh")] = post[..., 1]
        out[..., raw_index(f"{orbit}_diff_vv")] = post[..., 0] - pre[..., 0]
        out[..., raw_index(f"{orbit}_diff_vh")] = post[..., 1] - pre[..., 1]
    return out, positive.astype(np.int64), kind
