"""The ``scenes`` difficulty: patches cut from generated scenes (:class:`~landslide.synth.landscape.Landscape`), so
that a network trained on them meets in a scene the slides, confounders and context it learnt from.

Each landscape (its own seed, radiometry and up to 20% cloud) gives ``PER_LANDSCAPE`` windows: one on each of its
slides, placed so that the slide lies anywhere in it (centre, edge or corner), and negatives placed the same way
around random points of the ground slides start on (vegetated slopes; a tenth anywhere), cut from the same
landscape drawn without its slides. A negative thus has the relief, land cover, confounders and clouds a positive
has, without the slide: statistics of a window's bands that tell positives from negatives at AUC 0.74 tell them
apart no better than chance once the slides are taken out (``tests/test_scenes_profile.py``), so a network must
find the slide.
A window is positive when it holds at least ``MIN_PIXELS`` of a slide; one holding fewer is a negative of kind
``partial``.
"""

from __future__ import annotations

import numpy as np

from landslide.bands import PATCH_SIZE
from landslide.synth.landscape import Landscape, Objects

KINDS = ("positive", "partial", "negative")
#: fewest slide pixels that make a window positive (the realistic profile's smallest scar)
MIN_PIXELS = 8
#: side of each landscape windows are cut from, px, and the windows cut from one
SIDE = 512
PER_LANDSCAPE = 40
#: slides per km² of the landscapes: about 10 of 40 windows on a slide
DENSITY = 0.4
#: share of the negatives drawn anywhere (the others on slide ground, like the positives)
ANYWHERE = 0.1


def generate_batch(seed: int | np.random.SeedSequence, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` raw patches (n, 64, 64, 12) float64, their labels and kinds (indices into ``KINDS``)."""
    return generate_masked_batch(seed, n)[:3]


def generate_masked_batch(seed: int | np.random.SeedSequence, n: int
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`generate_batch`'s patches, labels and kinds, and each patch's slide mask (n, 64, 64) uint8 (1 on a
    slide's pixels, partial windows' few pixels included); the same draws as :func:`generate_batch`."""
    rng = np.random.default_rng(seed)
    patches, labels, kinds, masks = [], [], [], []
    for start in range(0, n, PER_LANDSCAPE):
        x, y, k, m = cut_windows(rng, min(PER_LANDSCAPE, n - start))
        patches.append(x)
        labels.append(y)
        kinds.append(k)
        masks.append(m.astype(np.uint8))
    if not patches:
        return (np.zeros((0, PATCH_SIZE, PATCH_SIZE, 12)), np.zeros(0, np.int64), np.zeros(0, np.int64),
                np.zeros((0, PATCH_SIZE, PATCH_SIZE), np.uint8))
    return np.concatenate(patches), np.concatenate(labels), np.concatenate(kinds), np.concatenate(masks)


def _render(land: Landscape, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    parts = [land.render(top, min(top + PATCH_SIZE, SIDE), rng) for top in range(0, SIDE, PATCH_SIZE)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _origin(rng: np.random.Generator, y: float, x: float) -> tuple[int, int]:
    """A window's top-left corner with the point (``y``, ``x``) anywhere in it, at least 4 px from its edges."""
    last = SIDE - PATCH_SIZE
    return (int(np.clip(y - rng.uniform(4, PATCH_SIZE - 4), 0, last)),
            int(np.clip(x - rng.uniform(4, PATCH_SIZE - 4), 0, last)))


def cut_windows(rng: np.random.Generator, n: int, without_slides: bool = False
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``n`` windows of one new landscape: raw patches, labels, kinds and the slides' masks (n, 64, 64).

    Positives: a window on each slide (up to ``n``). Negatives: windows around random points of slide ground
    (placed as the positives around their slides) or, ``ANYWHERE`` of them, anywhere, cut from the same landscape
    drawn without its slides, so that their context is the positives' without the slide. With
    ``without_slides`` every window comes from the landscape without slides (to measure what context tells)."""
    land = Landscape(SIDE, SIDE, int(rng.integers(1 << 31)), slides_per_km2=DENSITY,
                     cloud_cover=rng.uniform(0, 0.2))
    with_slides, fresh = _render(land, rng)
    slides, land.slides = land.slides.items[:n], Objects([])
    bare, _ = _render(land, rng)
    origins = [_origin(rng, s.y, s.x) for s in slides]
    while len(origins) < n:
        y, x = rng.uniform(0, SIDE, 2)
        if rng.random() >= ANYWHERE and not land.slide_ground(np.array([y]), np.array([x]))[0]:
            continue
        origins.append(_origin(rng, y, x))
    on_slide = np.arange(n) < len(slides)
    order = rng.permutation(n)
    patches, masks = [], []
    for i in order:
        t, c = origins[i]
        source = with_slides if on_slide[i] and not without_slides else bare
        patches.append(source[t : t + PATCH_SIZE, c : c + PATCH_SIZE])
        masks.append(fresh[t : t + PATCH_SIZE, c : c + PATCH_SIZE] & on_slide[i])
    patches, masks = np.stack(patches), np.stack(masks)
    counts = masks.sum(axis=(1, 2))
    labels = (counts >= MIN_PIXELS).astype(np.int64)
    kinds = np.where(labels == 1, 0, np.where(counts > 0, 1, 2))
    masks[labels == 0] = False  # a negative's mask agrees with its label (the patch logit is the pixel map's max)
    return patches.astype(np.float64), labels, kinds, masks
