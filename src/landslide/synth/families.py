"""Data families of the accuracy benchmark: generated releases that differ in where the evidence of a landslide
lies and how much of it there is.

Every family draws the same scene kinds (shares differ):

- ``positive``: 1-2 fresh scars (a bare, bright optical scar) with a backscatter drop at the same place;
- ``water``, ``flat``: obvious negatives (what the negative filter removes);
- ``old_scar``: a scar of landslide shape in the optical bands only (no SAR change);
- ``harvest``: rectangular fields with a SAR drop, mostly in VH (vegetation removed), and as much optical change as
  the family gives them (none: a SAR-only confounder);
- ``moisture``: a broad soft rise of backscatter (wet soil), SAR only;
- ``decoy``: an old scar and, elsewhere in the patch, a SAR drop of scar (or field) shape: both modalities show a
  change, but not at the same place;
- ``plain``: mixed land cover without events.

Families (``FAMILIES``): ``small`` (small co-located scars, 4-10 px wide and 10-35 px long, with single-modality
confounders: the evidence is where an optical scar and a SAR change coincide), ``cloud`` (most slides under a
thick cloud: the evidence is in the SAR bands), ``optical`` (SAR-quiet slides: the evidence is the fresh scar's
look and shape), ``large`` (large slides and confounders), ``weak`` (faint optical scars and weak SAR drops) and
``offset`` (a radiometric offset between the pre- and post-event passes, several dB, per pass and polarisation).
``realistic`` (:mod:`landslide.synth.realistic`) is one more family of the benchmark.

Each family is a difficulty profile of :mod:`landslide.synth.release` (:data:`PROFILES`): ``generate_release(out,
..., difficulty="small", label_noise=0.02)``, ``python -m landslide.synth --difficulty small`` and
``data.synthetic.difficulty=small`` draw it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    smooth_field,
    speckle_db,
)

KINDS = ("positive", "water", "flat", "old_scar", "harvest", "moisture", "decoy", "plain")
HAZE = np.array([1.0, 0.9, 0.8, 0.5])
#: Release sizes (training and test images), as the challenge's.
RELEASE_SIZE = (7147, 5398)


@dataclass(frozen=True)
class Family:
    """How a family draws its scenes: kind shares, scar sizes (half-lengths and half-widths in pixels), how strong
    the evidence is in each modality, clouds, and the pre/post calibration difference."""

    description: str
    shares: dict[str, float]
    scar_half_len: tuple[float, float] = (5.0, 17.5)
    scar_half_wid: tuple[float, float] = (2.0, 5.0)
    scar_count: int = 2
    #: optical opacity of a fresh scar and of an old one (1: fully bare)
    fresh_alpha: tuple[float, float] = (0.6, 1.0)
    old_alpha: tuple[float, float] = (0.55, 0.95)
    #: how far an old scar has revegetated (0: it looks fresh, 1: vegetation)
    old_regrowth: tuple[float, float] = (0.0, 0.25)
    #: the SAR drop of a slide, as a multiple of the usual one (VV 1.5-4 dB, VH 3-7 dB)
    drop_scale: tuple[float, float] = (0.6, 1.2)
    #: optical opacity of a harvested field (0: a SAR-only change)
    field_alpha: tuple[float, float] = (0.0, 0.15)
    #: field size (half-length, half-width)
    field_half_len: tuple[float, float] = (5.0, 12.0)
    field_half_wid: tuple[float, float] = (3.0, 7.0)
    #: shares of scenes with clouds, and of positives (and as many old scars and decoys) with a thick cloud on the scar
    cloudy: float = 0.3
    cloud_on_scar: float = 0.0
    #: standard deviation of the pre/post calibration difference (dB), per pass and polarisation
    prepost_offset_db: float = 0.3
    #: the decoy's SAR change: ``scar`` (a landslide-shaped drop) or ``field`` (a rectangle)
    decoy_change: str = "scar"
    #: share of positives that also hold a confounder (an old scar or a harvested field) elsewhere
    extra_confounder: float = 0.3
    looks: float = 5.0
    optical_gain: tuple[float, float] = (0.75, 1.25)
    tags: tuple[str, ...] = field(default_factory=tuple)


def _shares(**kw: float) -> dict[str, float]:
    shares = {k: kw.get(k, 0.0) for k in KINDS}
    shares["plain"] = round(1 - sum(v for k, v in shares.items() if k != "plain"), 6)
    return shares


_CONFOUNDED = {"positive": 0.17, "water": 0.07, "flat": 0.04, "old_scar": 0.16, "harvest": 0.12, "moisture": 0.10,
               "decoy": 0.16}

FAMILIES: dict[str, Family] = {
    "small": Family(
        "small co-located scars (4-10 px wide, 10-35 px long) with single-modality confounders",
        _shares(**_CONFOUNDED)),
    "cloud": Family(
        "most slides under a thick cloud: SAR-only evidence (as many old scars and decoys clouded)",
        _shares(**{**_CONFOUNDED, "decoy": 0.06, "old_scar": 0.14}), scar_half_len=(6.0, 18.0),
        scar_half_wid=(2.5, 6.0), cloudy=0.6, cloud_on_scar=0.7, decoy_change="field"),
    "optical": Family(
        "SAR-quiet slides: fresh bare scars against revegetated old scars, bare fields and SAR-only changes",
        _shares(**_CONFOUNDED), scar_half_len=(6.0, 18.0), scar_half_wid=(2.5, 6.0), drop_scale=(0.0, 0.12),
        old_regrowth=(0.3, 0.6), old_alpha=(0.35, 0.8), field_alpha=(0.6, 1.0)),
    "large": Family(
        "large slides (12-28 px half-length), with large confounders",
        _shares(**_CONFOUNDED), scar_half_len=(12.0, 28.0), scar_half_wid=(5.0, 12.0), scar_count=1,
        field_half_len=(10.0, 22.0), field_half_wid=(6.0, 14.0)),
    "weak": Family(
        "weak contrast: faint optical scars, weak SAR drops, noisier SAR",
        _shares(**_CONFOUNDED), scar_half_len=(6.0, 18.0), scar_half_wid=(2.5, 6.0), fresh_alpha=(0.25, 0.5),
        old_alpha=(0.2, 0.45), drop_scale=(0.3, 0.6), looks=4.0),
    "offset": Family(
        "a radiometric offset between the pre- and post-event passes (3 dB std, per pass and polarisation)",
        _shares(**_CONFOUNDED), scar_half_len=(6.0, 18.0), scar_half_wid=(2.5, 6.0), prepost_offset_db=3.0,
        optical_gain=(0.6, 1.4)),
}
#: Every family of the accuracy benchmark, ``realistic`` (:mod:`landslide.synth.realistic`) included.
FAMILY_NAMES: tuple[str, ...] = (*FAMILIES, "realistic")

_YY, _XX = np.mgrid[0:PATCH_SIZE, 0:PATCH_SIZE].astype(np.float64)
_COL = (slice(None), None, None)


def _scar(rng: np.random.Generator, n: int, half_len: tuple, half_wid: tuple, cx: np.ndarray,
          cy: np.ndarray) -> np.ndarray:
    """(n, 64, 64) tapered, ragged ellipses (landslide scars) centred at ``cx``, ``cy``."""
    a, b = rng.uniform(*half_len, n)[_COL], rng.uniform(*half_wid, n)[_COL]
    theta = rng.uniform(0, np.pi, n)[_COL]
    dx, dy = _XX - cx[_COL], _YY - cy[_COL]
    u = (dx * np.cos(theta) + dy * np.sin(theta)) / a
    v = (-dx * np.sin(theta) + dy * np.cos(theta)) / b
    v = v * (1 + 0.4 * u.clip(-1, 1))  # narrower towards the toe, like a debris tongue
    return (u**2 + v**2) < 1 + 0.3 * smooth_field(rng, n, (6, 17))


def _rectangle(rng: np.random.Generator, n: int, half_len: tuple, half_wid: tuple, cx: np.ndarray,
               cy: np.ndarray) -> np.ndarray:
    """(n, 64, 64) rotated rectangles (fields: straight edges) centred at ``cx``, ``cy``."""
    a, b = rng.uniform(*half_len, n)[_COL], rng.uniform(*half_wid, n)[_COL]
    theta = rng.uniform(0, np.pi, n)[_COL]
    dx, dy = _XX - cx[_COL], _YY - cy[_COL]
    return (np.abs(dx * np.cos(theta) + dy * np.sin(theta)) < a) & (np.abs(-dx * np.sin(theta) + dy * np.cos(theta))
                                                                    < b)


def _centres(rng: np.random.Generator, n: int, margin: float = 12) -> tuple[np.ndarray, np.ndarray]:
    return tuple(rng.uniform(margin, PATCH_SIZE - margin, (2, n)))


def _elsewhere(rng: np.random.Generator, cx: np.ndarray, cy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres in the opposite part of the patch (reflected through its centre, jittered)."""
    mid = (PATCH_SIZE - 1) / 2
    ex = (2 * mid - cx + rng.normal(0, 4, len(cx))).clip(8, PATCH_SIZE - 8)
    ey = (2 * mid - cy + rng.normal(0, 4, len(cy))).clip(8, PATCH_SIZE - 8)
    return ex, ey


def _blend(optical: np.ndarray, where: np.ndarray, look: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = (where * alpha[_COL])[..., None]
    return optical * (1 - a) + look[:, None, None, :] * a


def family_batch(name: str, seed: int | np.random.SeedSequence, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` raw patches (n, 64, 64, 12) float64 of family ``name``, their (true) labels and scene kinds (indices
    into ``KINDS``)."""
    fam = FAMILIES[name]
    rng = np.random.default_rng(seed)
    kind = rng.choice(len(KINDS), n, p=[fam.shares[k] for k in KINDS])
    is_ = {k: kind == KINDS.index(k) for k in KINDS}
    positive = is_["positive"]
    f1, f2, f3, topo = (smooth_field(rng, n) for _ in range(4))

    # land cover: the same mixture for every kind but the obvious negatives
    cover = np.full((n, PATCH_SIZE, PATCH_SIZE), VEG)
    cover[f1 > rng.uniform(0.8, 2.0, n)[_COL]] = BARE
    cover[f1 < rng.uniform(-2.6, -1.6, n)[_COL]] = WATER
    cover[f2 > rng.uniform(1.2, 2.4, n)[_COL]] = URBAN
    cover = np.where(is_["water"][_COL], np.where(f1 < rng.uniform(0.0, 1.0, n)[_COL], WATER, cover), cover)
    cover = np.where(is_["flat"][_COL], np.where(f1 < -1.8, WATER, BARE), cover)
    relief = np.where(is_["water"] | is_["flat"], 0.15, rng.uniform(0.5, 1.5, n))[_COL] * topo
    optical = OPTICAL[cover] * (1 + 0.1 * f3[..., None])
    optical *= 1 + 0.06 * rng.standard_normal(optical.shape)

    # the event and, elsewhere, an extra confounder
    cx, cy = _centres(rng, n)
    ex, ey = _elsewhere(rng, cx, cy)
    scar = np.zeros((n, PATCH_SIZE, PATCH_SIZE), bool)
    for c in range(fam.scar_count):  # the first scar at (cx, cy), more beside it
        near = [(centre + rng.normal(0, 8, n)).clip(8, PATCH_SIZE - 8) for centre in (cx, cy)]
        jx, jy = (cx, cy) if c == 0 else near
        one = _scar(rng, n, fam.scar_half_len, fam.scar_half_wid, jx, jy)
        scar |= one & ((c == 0) | (rng.random(n) < 0.4))[_COL]
    extra = positive & (rng.random(n) < fam.extra_confounder)
    extra_old = extra & (rng.random(n) < 0.5)
    fresh = scar & positive[_COL]
    old = (scar & (is_["old_scar"] | is_["decoy"])[_COL]) | (
        _scar(rng, n, fam.scar_half_len, fam.scar_half_wid, ex, ey) & extra_old[_COL])
    fields = _rectangle(rng, n, fam.field_half_len, fam.field_half_wid, cx, cy) & is_["harvest"][_COL]
    fields |= _rectangle(rng, n, fam.field_half_len, fam.field_half_wid, ex, ey) & (extra & ~extra_old)[_COL]
    if fam.decoy_change == "scar":
        decoy_change = _scar(rng, n, fam.scar_half_len, fam.scar_half_wid, ex, ey)
    else:
        decoy_change = _rectangle(rng, n, fam.field_half_len, fam.field_half_wid, ex, ey)
    decoy_change &= is_["decoy"][_COL] & ~old
    fields &= ~fresh
    wet = np.clip((smooth_field(rng, n, (4, 9)) - rng.uniform(0.3, 1.2, n)[_COL]) * 1.5, 0, 1) * is_["moisture"][_COL]

    # optical looks: fresh scars bare and bright, old ones as bare or partly revegetated, fields bare as the family
    # says
    fresh_look = FRESH_SCAR * rng.uniform(0.85, 1.15, (n, 1))
    optical = _blend(optical, fresh, fresh_look, rng.uniform(*fam.fresh_alpha, n))
    regrowth = rng.uniform(*fam.old_regrowth, (n, 1))
    old_look = ((1 - regrowth) * FRESH_SCAR + regrowth * OPTICAL[VEG]) * rng.uniform(0.85, 1.15, (n, 1))
    optical = _blend(optical, old, old_look, rng.uniform(*fam.old_alpha, n))
    t = rng.uniform(0, 1, (n, 1))
    field_look = (t * OPTICAL[BARE] + (1 - t) * FRESH_SCAR) * rng.uniform(0.85, 1.1, (n, 1))
    optical = _blend(optical, fields, field_look, rng.uniform(*fam.field_alpha, n))
    optical *= 1 + 0.06 * rng.standard_normal(optical.shape) * (fresh | old | fields)[..., None]
    gain = rng.uniform(*fam.optical_gain, (n, 1, 1, 1)) * rng.uniform(0.92, 1.08, (n, 1, 1, 4))
    optical = optical * gain + rng.uniform(0, 500, (n, 1, 1, 1)) * HAZE

    # clouds: partial ones anywhere; thick round ones on the scar of some positives and, as often, on old scars and
    # decoys (so that a thick round cloud is no clue)
    level = rng.uniform(-1.5, 1.2, n)[_COL]
    alpha = np.clip((smooth_field(rng, n, (4, 9)) - level) * 1.5, 0, 1) * rng.uniform(0.4, 1.0, n)[_COL]
    alpha *= (rng.random(n) < fam.cloudy)[_COL]
    if fam.cloud_on_scar > 0:
        thick = (positive | is_["old_scar"] | is_["decoy"]) & (rng.random(n) < fam.cloud_on_scar)
        thick |= ~(positive | is_["old_scar"] | is_["decoy"]) & (rng.random(n) < fam.cloud_on_scar * 0.3)
        radius = rng.uniform(fam.scar_half_len[1] + 2, fam.scar_half_len[1] + 10, n)[_COL]
        dist = np.hypot(_XX - cx[_COL], _YY - cy[_COL]) * (1 + 0.15 * smooth_field(rng, n, (4, 9)))
        disc = np.clip((radius - dist) / 3, 0, 1) * thick[_COL]
        alpha = np.maximum(alpha, disc)
    cloud = CLOUD * rng.uniform(0.9, 1.15, (n, 1, 1, 1)) * (1 + 0.03 * rng.standard_normal(optical.shape))
    optical = ((1 - alpha[..., None]) * optical + alpha[..., None] * cloud).clip(1, 15000)

    # SAR: a drop where a slide stripped the ground (and where a decoy's change is), a VH drop on fields, a rise
    # where the soil is wet; per-patch calibration, and a calibration difference between the two acquisitions
    out = np.empty((n, PATCH_SIZE, PATCH_SIZE, len(RAW_NAMES)))
    out[..., [raw_index(b) for b in ("red", "green", "blue", "nir")]] = optical
    slide_scale = rng.uniform(*fam.drop_scale, n)[:, None, None, None]
    for orbit, facing in (("desc", 1.0), ("asc", -1.0)):
        base = BACKSCATTER[cover] + (facing * 2.5 * relief)[..., None]
        base[..., 0] += 0.8 * facing
        base = base + rng.normal(0, 1.5, (n, 1, 1, 1))
        seen = rng.uniform(0.5, 1.0, (n, 1, 1, 1))  # layover and shadow weaken a change in some passes
        drop = np.stack([rng.uniform(-4.0, -1.5, n), rng.uniform(-7.0, -3.0, n)], -1)[:, None, None, :] * seen
        field_drop = np.stack([rng.uniform(-1.5, 0.5, n), rng.uniform(-6.0, -3.0, n)], -1)[:, None, None, :]
        rise = np.stack([rng.uniform(1.5, 3.5, n), rng.uniform(1.0, 2.5, n)], -1)[:, None, None, :]
        bias = rng.normal(0, fam.prepost_offset_db, (n, 1, 1, 2))
        post_true = (base + fresh[..., None] * drop * slide_scale + decoy_change[..., None] * drop
                     + fields[..., None] * field_drop + wet[..., None] * rise + bias)
        post = post_true + speckle_db(rng, base.shape, fam.looks)
        pre = base + speckle_db(rng, base.shape, fam.looks)
        out[..., raw_index(f"{orbit}_vv")] = post[..., 0]
        out[..., raw_index(f"{orbit}_vh")] = post[..., 1]
        out[..., raw_index(f"{orbit}_diff_vv")] = post[..., 0] - pre[..., 0]
        out[..., raw_index(f"{orbit}_diff_vh")] = post[..., 1] - pre[..., 1]
    return out, positive.astype(np.int64), kind


@dataclass(frozen=True)
class FamilyProfile:
    """Family ``name`` as a difficulty profile of :mod:`landslide.synth.release` (``KINDS``, ``generate_batch``)."""

    name: str
    KINDS: tuple[str, ...] = KINDS

    def generate_batch(self, seed: int | np.random.SeedSequence, n: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return family_batch(self.name, seed, n)


#: The families as difficulty profiles, by name.
PROFILES: dict[str, FamilyProfile] = {name: FamilyProfile(name) for name in FAMILIES}
