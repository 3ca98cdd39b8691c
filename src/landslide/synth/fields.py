"""What every generated patch is made of: land-cover looks (optical reflectance, SAR backscatter), smooth random
fields, ragged scar shapes and SAR speckle. The difficulty profiles (``easy``, ``realistic``) draw their scenes from
these."""

from __future__ import annotations

import numpy as np

from landslide.bands import PATCH_SIZE

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


def ellipses(rng, n, count, half_len, half_wid, margin=10) -> np.ndarray:
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


def speckle_db(rng, shape, looks: float = 5.0) -> np.ndarray:
    return 10 * np.log10(rng.gamma(looks, 1 / looks, shape))
