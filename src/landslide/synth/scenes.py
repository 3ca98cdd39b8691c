"""The ``scenes`` difficulty: patches cut from generated scenes (:class:`~landslide.synth.landscape.Landscape`), so
that a network trained on them meets in a scene the slides, confounders and context it learnt from.

Each batch draws one landscape (its own seed, radiometry and cloud cover; more slides than a scene for maps, so
positives are not rare), renders it whole, and cuts windows: about a fifth placed so that a slide lies somewhere in
them (centre, edge or corner), the others anywhere. A window is positive when it holds at least ``MIN_PIXELS`` of a
slide; one holding fewer (a slide's tip at its edge) is a negative of kind ``partial``. Slides, old scars,
harvested fields and SAR-only changes share the landscape, so the context of a positive (relief, land cover) is
that of the negatives around it: only the slide itself tells them apart.
"""

from __future__ import annotations

import numpy as np

from landslide.bands import PATCH_SIZE
from landslide.synth.landscape import Landscape

KINDS = ("positive", "partial", "negative")
#: fewest slide pixels that make a window positive (the realistic profile's smallest scar)
MIN_PIXELS = 8
#: side of each landscape windows are cut from, px, and the windows cut from one
SIDE = 512
PER_LANDSCAPE = 64
#: slides per km² of the landscapes, and the share of windows placed on a slide (about 28% positives in all)
DENSITY = 0.2
ON_SLIDE = 0.2


def generate_batch(seed: int | np.random.SeedSequence, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` raw patches (n, 64, 64, 12) float64, their labels and kinds (indices into ``KINDS``)."""
    rng = np.random.default_rng(seed)
    patches, labels, kinds = [], [], []
    for start in range(0, n, PER_LANDSCAPE):
        x, y, k = _cut(rng, min(PER_LANDSCAPE, n - start))
        patches.append(x)
        labels.append(y)
        kinds.append(k)
    if not patches:
        return np.zeros((0, PATCH_SIZE, PATCH_SIZE, 12)), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(patches), np.concatenate(labels), np.concatenate(kinds)


def _cut(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` windows of one new landscape."""
    land = Landscape(SIDE, SIDE, int(rng.integers(1 << 31)), slides_per_km2=DENSITY,
                     cloud_cover=rng.uniform(0, 0.2))
    parts = [land.render(top, min(top + PATCH_SIZE, SIDE), rng) for top in range(0, SIDE, PATCH_SIZE)]
    scene = np.concatenate([p[0] for p in parts])
    fresh = np.concatenate([p[1] for p in parts])
    last = SIDE - PATCH_SIZE
    tops, lefts = rng.integers(0, last + 1, n), rng.integers(0, last + 1, n)
    slides = land.slides.items
    for i in np.flatnonzero(rng.random(n) < ON_SLIDE) if slides else []:
        s = slides[rng.integers(len(slides))]  # the slide anywhere in the window: centre, edge or corner
        tops[i] = int(np.clip(s.y - rng.uniform(4, PATCH_SIZE - 4), 0, last))
        lefts[i] = int(np.clip(s.x - rng.uniform(4, PATCH_SIZE - 4), 0, last))
    patches = np.stack([scene[t : t + PATCH_SIZE, c : c + PATCH_SIZE] for t, c in zip(tops, lefts)])
    counts = np.array([fresh[t : t + PATCH_SIZE, c : c + PATCH_SIZE].sum() for t, c in zip(tops, lefts)])
    labels = (counts >= MIN_PIXELS).astype(np.int64)
    kinds = np.where(labels == 1, 0, np.where(counts > 0, 1, 2))
    return patches.astype(np.float64), labels, kinds
