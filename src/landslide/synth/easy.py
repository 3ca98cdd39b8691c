"""The ``easy`` difficulty profile, the embedded default data. Each scene has land cover (vegetation, bare soil,
water, urban) on smooth random fields, topography that brightens slopes facing one SAR pass and darkens them for the
other, speckled SAR in dB, and clouds that hide the optical view. Scene kinds (shares of all images):

- ``positive`` (17.5%): 1-2 elongated fresh scars on vegetated land, seen in the post-event optical bands
  (bare, bright, low NIR) together with a backscatter drop in the diff bands at the same place;
- ``water`` and ``flat`` (18% and 17%): obvious negatives (open water; bare flats with no relief);
- ``old_scar`` (10%): a hard negative, an old scar in the optical bands with no SAR change;
- ``change_only`` (10%): a hard negative, a compact SAR change (harvest, works) with no optical scar;
- ``plain`` (the rest): mixed landscapes without events.
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

KINDS = ("positive", "water", "flat", "old_scar", "change_only", "plain")
KIND_SHARES = (0.175, 0.18, 0.17, 0.10, 0.10, 0.275)


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
    scar = ellipses(rng, n, 2, (7, 18), (2.0, 4.5)) & (is_["positive"] | is_["old_scar"])[:, None, None]
    blob = ellipses(rng, n, 1, (4, 8), (4, 8)) & is_["change_only"][:, None, None]
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
        post = post_true + speckle_db(rng, base.shape)
        pre = base + speckle_db(rng, base.shape)
        out[..., raw_index(f"{orbit}_vv")] = post[..., 0]
        out[..., raw_index(f"{orbit}_vh")] = post[..., 1]
        out[..., raw_index(f"{orbit}_diff_vv")] = post[..., 0] - pre[..., 0]
        out[..., raw_index(f"{orbit}_diff_vh")] = post[..., 1] - pre[..., 1]
    labels = is_["positive"].astype(np.int64)
    return out, labels, fresh
