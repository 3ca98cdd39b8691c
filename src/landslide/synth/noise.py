"""Smooth random fields over a whole scene, evaluated at any rows or points without holding the scene.

A field is a sum of octaves of lattice noise: standard normal values on a square lattice of ``spacing`` px,
interpolated bilinearly (as the patch generator's :func:`~landslide.synth.fields.smooth_field` does). Lattice row
``i`` of an octave is drawn from its own seed (``seed``, the octave, ``i``), so a strip of rows, a single point or
the whole scene see the same values: a scene is drawn strip by strip with no seams and no whole-scene array.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: mean variance of bilinearly interpolated unit lattice noise: ((1 - f)^2 + f^2) averaged over f, in 2-D
_BILINEAR_VARIANCE = (2 / 3) ** 2
#: lattice rows above the scene (negative indices) get seeds too
_ROW_SHIFT = 1 << 20
#: lattice columns kept beyond each side of the scene, for points a little outside it
_COLUMN_PAD = 4


class LatticeNoise:
    """One octave: unit normal values every ``spacing`` px, bilinearly interpolated, over a scene ``width`` px
    wide (any height), shifted by a random sub-lattice offset."""

    def __init__(self, seed: Sequence[int], spacing: float, width: int) -> None:
        self.seed = [int(s) for s in seed]
        self.spacing = float(spacing)
        self.columns = math.ceil(width / spacing) + 2 * _COLUMN_PAD + 2
        self.offset = np.random.default_rng([*self.seed, 1_000_003]).uniform(0, spacing, 2)

    def _lattice(self, first: int, last: int) -> np.ndarray:
        """Lattice rows ``first..last`` (inclusive), (rows, columns)."""
        return np.stack([np.random.default_rng([*self.seed, i + _ROW_SHIFT]).standard_normal(self.columns)
                         for i in range(first, last + 1)])

    def at(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Values at pixel coordinates ``y``, ``x`` (arrays of one shape; fractional allowed). On a grid (as
        ``np.mgrid`` makes) each lattice row is interpolated along the columns once, then along the rows: the same
        values, element by element, without gathering four corners per pixel."""
        y, x = np.asarray(y, np.float64), np.asarray(x, np.float64)
        on_grid = is_grid(y, x)
        if on_grid:
            y, x = y[:, 0], x[0]
        gy = (y + self.offset[0]) / self.spacing
        gx = (x + self.offset[1]) / self.spacing + _COLUMN_PAD
        iy, ix = np.floor(gy).astype(np.int64), np.floor(gx).astype(np.int64)
        fy, fx = gy - iy, gx - ix
        if iy.size == 0:
            return np.zeros(iy.shape)
        first = int(iy.min())
        grid = self._lattice(first, int(iy.max()) + 1)
        r = iy - first
        ix = ix.clip(0, self.columns - 2)
        if on_grid:
            across = grid[:, ix] * (1 - fx) + grid[:, ix + 1] * fx  # (lattice rows, columns)
            fy = fy[:, None]
            return across[r] * (1 - fy) + across[r + 1] * fy
        top = grid[r, ix] * (1 - fx) + grid[r, ix + 1] * fx
        bottom = grid[r + 1, ix] * (1 - fx) + grid[r + 1, ix + 1] * fx
        return top * (1 - fy) + bottom * fy


def is_grid(y: np.ndarray, x: np.ndarray) -> bool:
    """True when ``y``, ``x`` are a non-empty 2-D grid (as ``np.mgrid`` makes): ``y`` constant along each row, ``x``
    along each column."""
    return (y.ndim == 2 and y.shape == x.shape and y.size > 0 and bool((y == y[:, :1]).all())
            and bool((x == x[:1]).all()))


class SmoothField:
    """A sum of lattice-noise octaves (``spacings`` px, ``weights``), scaled to roughly unit variance."""

    def __init__(self, seed: Sequence[int], width: int, spacings: Sequence[float], weights: Sequence[float]) -> None:
        self.octaves = [LatticeNoise([*seed, k], s, width) for k, s in enumerate(spacings)]
        self.weights = [float(w) for w in weights]
        self.scale = 1 / math.sqrt(_BILINEAR_VARIANCE * sum(w * w for w in self.weights))
        self.width = width

    def at(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return self.scale * sum(w * o.at(y, x) for o, w in zip(self.octaves, self.weights))

    def rows(self, top: int, bottom: int) -> np.ndarray:
        """(bottom - top, width) values of scene rows ``[top, bottom)``."""
        yy, xx = np.mgrid[top:bottom, 0 : self.width]
        return self.at(yy, xx)


#: the patch generator's octaves (4, 9 and 17 lattice points across a 64 px patch), in pixels, and their weights
PATCH_SPACINGS = (64 / 3, 8.0, 4.0)
PATCH_WEIGHTS = (1.0, 0.6, 0.36)
