"""A continuous landscape for generated scenes: land cover, relief, rivers, fields, clouds and events, drawn with
the looks of the ``realistic`` patch profile (:mod:`landslide.synth.realistic`) so that a network trained on those
patches meets the same slides in a scene.

The landscape is planned once (random fields and a list of objects: slides, old scars, field parcels, SAR-only
changes, rivers), then :meth:`Landscape.render` draws any strip of rows. Everything is a function of the scene
coordinates, so strips join without seams, and no array of the scene's size is ever held.

- **Land cover**: vegetation, with bare soil, lakes and towns where smooth fields (octaves from 4 to 160 px)
  cross thresholds; meandering rivers 30-70 m wide.
- **Relief**: a topography field whose amplitude varies across the scene (flat valleys, steep mountains); slopes
  facing a SAR pass are brighter in it, as in the patches.
- **Slides** (:class:`Slide`): tapered, ragged ellipses (the patch generator's shapes: large, small and thin,
  10-500 px, 1,000-50,000 m²) on vegetated slopes, their long axis downslope, anywhere, so they cross window
  borders; bare in the optical bands and with a backscatter drop, weak in some.
- **Confounders**: old scars (optical, no SAR change), field parcels on flat land (some harvested: bare with a SAR
  drop, rectangular), compact SAR-only changes.
- **Clouds**: banks of thick and thin cloud covering ``cloud_cover`` of the scene, hiding some slides.
- **Radiometry**: one optical gain and haze, one SAR calibration offset per pass, and a small pre/post difference
  for the scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from landslide.bands import RAW_NAMES, raw_index
from landslide.synth.fields import BACKSCATTER, BARE, CLOUD, FRESH_SCAR, OPTICAL, URBAN, VEG, WATER, speckle_db
from landslide.synth.noise import PATCH_SPACINGS, PATCH_WEIGHTS, SmoothField
from landslide.synth.realistic import HAZE

#: slide size classes of the realistic patches (half length, half width in px; share), and one of larger slides
SLIDE_SIZES = (((7, 18), (2.0, 4.5), 0.5), ((3, 7), (1.5, 3.0), 0.2), ((9, 20), (1.1, 1.8), 0.2),
               ((16, 26), (4.0, 6.5), 0.1))


@dataclass(frozen=True)
class Slide:
    """A fresh landslide scar: centre (``x``, ``y`` px), half length and width (px), the long axis' angle
    (radians, from +x towards +y), and the seed of its ragged edge. ``bare``: opacity of the scar in the optical
    bands (0.55-1) and ``brightness`` its reflectance relative to a fresh scar's; ``seen``: the share of the
    backscatter drop (``drop_vv``, ``drop_vh`` dB) each SAR pass sees (desc, asc)."""

    x: float
    y: float
    half_length: float
    half_width: float
    angle: float
    seed: int = 0
    bare: float = 0.85
    brightness: float = 1.0
    seen: tuple[float, float] = (0.8, 0.8)
    drop_vv: float = -2.8
    drop_vh: float = -5.0

    @property
    def radius(self) -> float:
        """Half the side of a square that holds the scar whatever its ragged edge."""
        return 1.8 * self.half_length + 3

    def mask(self, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        """Inside the scar, at pixel centres ``yy``, ``xx`` (the patch generator's tapered, ragged ellipse)."""
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        dx, dy = xx - self.x, yy - self.y
        u = (dx * cos + dy * sin) / self.half_length
        v = (-dx * sin + dy * cos) / self.half_width
        v = v * (1 + 0.4 * u.clip(-1, 1))  # narrower towards the toe, like a debris tongue
        reach = self.radius
        ragged = 0.35 * SmoothField([self.seed, 17], int(2 * reach) + 2, (12.8, 4.0), (1.0, 0.6)).at(dy + reach,
                                                                                                   dx + reach)
        return (u**2 + v**2) < 1 + ragged


@dataclass(frozen=True)
class Parcel:
    """A field: a rotated rectangle; ``harvested`` ones are bare with a SAR drop, the others a crop."""

    x: float
    y: float
    half_length: float
    half_width: float
    angle: float
    harvested: bool
    look: tuple[float, float, float, float]
    opacity: float

    @property
    def radius(self) -> float:
        return math.hypot(self.half_length, self.half_width) + 1

    def mask(self, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        dx, dy = xx - self.x, yy - self.y
        return (np.abs(dx * cos + dy * sin) < self.half_length) & (np.abs(-dx * sin + dy * cos) < self.half_width)


@dataclass(frozen=True)
class River:
    """A meandering river across the scene along ``axis`` (0: top to bottom, 1: left to right)."""

    axis: int
    centre: float
    amplitudes: tuple[float, float]
    wavelengths: tuple[float, float]
    phases: tuple[float, float]
    width: float

    def course(self, t: np.ndarray) -> np.ndarray:
        """The river's centre across the axis at position ``t`` along it."""
        return self.centre + sum(a * np.sin(2 * np.pi * t / w + p)
                                 for a, w, p in zip(self.amplitudes, self.wavelengths, self.phases))

    def mask(self, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        along, across = (yy, xx) if self.axis == 0 else (xx, yy)
        return np.abs(across - self.course(along)) < self.width / 2


@dataclass
class Objects:
    """Objects of one kind, with the rows they span, to find those a strip touches."""

    items: list = field(default_factory=list)

    def touching(self, top: int, bottom: int) -> list:
        return [o for o in self.items if o.y - o.radius < bottom and o.y + o.radius >= top]


def _near(candidate: Slide, others: list, share: float) -> bool:
    """True when ``candidate`` is closer to one of ``others`` than ``share`` of their radii together."""
    return any(math.hypot(candidate.x - o.x, candidate.y - o.y) < share * (candidate.radius + o.radius) for o in others)


def draw_strip_objects(objects: list, top: int, bottom: int, width: int) -> list[tuple[object, tuple, np.ndarray]]:
    """(object, (row slice, column slice), mask) of each object over its box within rows ``[top, bottom)``."""
    out = []
    for o in objects:
        y0, y1 = max(top, int(o.y - o.radius)), min(bottom, math.ceil(o.y + o.radius) + 1)
        x0, x1 = max(0, int(o.x - o.radius)), min(width, math.ceil(o.x + o.radius) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        m = o.mask(yy, xx)
        if m.any():
            out.append((o, (slice(y0 - top, y1 - top), slice(x0, x1)), m))
    return out


class Landscape:
    """A scene's land cover, relief, objects and radiometry, planned from ``seed``; :meth:`render` draws rows.

    ``slides``: the fresh landslides to plant (None: ``slides_per_km2`` at random places that suit them);
    ``cloud_cover``: the share of the scene under cloud (0: none); ``pixel_size``: metres, for the densities."""

    def __init__(self, width: int, height: int, seed: int, slides_per_km2: float, cloud_cover: float,
                 slides: list[Slide] | None = None, pixel_size: float = 10.0) -> None:
        self.width, self.height = width, height
        rng = np.random.default_rng([seed, 11])
        self.rng_seed = seed
        large = 160.0
        self.cover = SmoothField([seed, 1], width, (large, *PATCH_SPACINGS), (0.8, *PATCH_WEIGHTS))
        self.urban = SmoothField([seed, 2], width, (large, *PATCH_SPACINGS), (0.6, *PATCH_WEIGHTS))
        self.texture = SmoothField([seed, 3], width, PATCH_SPACINGS, PATCH_WEIGHTS)
        self.topo = SmoothField([seed, 4], width, (256.0, *PATCH_SPACINGS), (1.0, *PATCH_WEIGHTS))
        self.steep = SmoothField([seed, 5], width, (300.0, 120.0), (1.0, 0.5))
        self.clouds = SmoothField([seed, 6], width, (128.0, *PATCH_SPACINGS[:2]), (1.0, 0.8, 0.5))
        self.thickness = SmoothField([seed, 7], width, (96.0,), (1.0,))
        self.farmland = SmoothField([seed, 8], width, (400.0,), (1.0,))
        self.cloud_level = NormalDist().inv_cdf(1 - cloud_cover) if cloud_cover > 0 else math.inf
        # scene-wide radiometry, as the realistic patches draw it per patch
        self.gain = rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05, 4)
        self.haze = rng.uniform(0, 300) * HAZE
        self.sar_offset = rng.normal(0, 1.0, 2)
        self.sar_bias = rng.normal(0, 0.3, (2, 2))
        km2 = width * height * (pixel_size / 1000) ** 2
        self.rivers = self._rivers(rng)
        self.parcels = Objects(self._parcels(rng))
        self.slides = Objects(list(slides) if slides is not None else
                              self._place_scars(rng, round(slides_per_km2 * km2), fresh=True))
        self.old_scars = Objects(self._place_scars(rng, round(0.4 * slides_per_km2 * km2), fresh=False,
                                                   avoid=self.slides.items))
        self.changes = Objects(self._changes(rng, round(0.3 * slides_per_km2 * km2)))

    # ------------------------------------------------------------------ planning
    def relief(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Topography times its local amplitude (flat valleys 0.15, steep mountains up to 1.8)."""
        amplitude = (0.9 + 0.6 * self.steep.at(y, x)).clip(0.15, 1.8)
        return amplitude * self.topo.at(y, x)

    def slide_ground(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Where slides may start: vegetated land on slopes steeper than the valleys."""
        return (self.land_cover(y, x) == VEG) & (0.9 + 0.6 * self.steep.at(y, x) > 0.8)

    def land_cover(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        cover = np.full(np.shape(y), VEG)
        f = self.cover.at(y, x)
        cover[f > 1.5] = BARE
        cover[f < -2.1] = WATER
        cover[self.urban.at(y, x) > 1.9] = URBAN
        for river in self.rivers:
            cover[river.mask(y, x)] = WATER
        return cover

    def _rivers(self, rng: np.random.Generator) -> list[River]:
        count = max(1, round(self.width * self.height / 1000**2))
        rivers = []
        for _ in range(count):
            axis = int(rng.integers(2))
            across = self.width if axis == 0 else self.height
            rivers.append(River(axis, rng.uniform(0.1, 0.9) * across, (rng.uniform(15, 50), rng.uniform(4, 12)),
                                (rng.uniform(300, 800), rng.uniform(80, 200)), tuple(rng.uniform(0, 2 * np.pi, 2)),
                                rng.uniform(3, 7)))
        return rivers

    def _parcels(self, rng: np.random.Generator) -> list[Parcel]:
        """Fields on flat farmland: one in most 40 px cells there, aligned per region; a third harvested."""
        cell = 40
        cy, cx = np.mgrid[cell // 2 : self.height : cell, cell // 2 : self.width : cell].reshape(2, -1).astype(float)
        cy += rng.uniform(-8, 8, cy.shape)
        cx += rng.uniform(-8, 8, cx.shape)
        flat = (0.9 + 0.6 * self.steep.at(cy, cx)) < 0.9
        farm = (self.farmland.at(cy, cx) > -0.2) & flat & (self.land_cover(cy, cx) == VEG)
        farm &= rng.random(cy.shape) < 0.8
        parcels = []
        for y, x in zip(cy[farm], cx[farm]):
            harvested = bool(rng.random() < 0.35)
            t = rng.uniform(0, 1)
            if harvested:
                look = (t * OPTICAL[BARE] + (1 - t) * FRESH_SCAR) * rng.uniform(0.85, 1.1)
            else:
                look = OPTICAL[VEG] * rng.uniform(0.8, 1.25, 4)
            angle = float(0.4 * self.farmland.at(np.array([y]), np.array([x]))[0] + rng.normal(0, 0.05))
            parcels.append(Parcel(float(x), float(y), rng.uniform(8, 17), rng.uniform(5, 12),
                                  angle, harvested, tuple(float(v) for v in look), rng.uniform(0.6, 1.0)))
        return parcels

    def _place_scars(self, rng: np.random.Generator, count: int, fresh: bool,
                     avoid: list[Slide] | None = None) -> list[Slide]:
        """``count`` scars on vegetated slopes (not on fields, rivers or each other), long axis downslope."""
        if count <= 0:
            return []
        n = 40 * count
        y, x = rng.uniform(0, self.height, n), rng.uniform(0, self.width, n)
        ok = self.slide_ground(y, x)
        placed: list[Slide] = list(avoid or [])
        start = len(placed)
        sizes = rng.choice(len(SLIDE_SIZES), n, p=[s[2] for s in SLIDE_SIZES])
        for i in np.flatnonzero(ok):
            if len(placed) - start >= count:
                break
            (al, ah), (bl, bh), _ = SLIDE_SIZES[sizes[i]]
            a, b = rng.uniform(al, ah), rng.uniform(bl, bh)
            gy = self.relief(np.array([y[i] + 1.0]), np.array([x[i]]))[0] - self.relief(np.array([y[i] - 1.0]),
                                                                                        np.array([x[i]]))[0]
            gx = self.relief(np.array([y[i]]), np.array([x[i] + 1.0]))[0] - self.relief(np.array([y[i]]),
                                                                                        np.array([x[i] - 1.0]))[0]
            angle = math.atan2(-gy, -gx) + rng.normal(0, 0.3)  # downslope, roughly
            candidate = Slide(float(x[i]), float(y[i]), a, b, angle, int(rng.integers(1 << 31)),
                              bare=rng.uniform(0.55, 1.0) if fresh else rng.uniform(0.3, 0.8),
                              brightness=rng.uniform(0.8, 1.15) if fresh else rng.uniform(0.75, 1.05),
                              seen=tuple(rng.uniform(0.1, 0.4, 2) if rng.random() < 0.14 else rng.uniform(0.5, 1.0, 2)),
                              drop_vv=rng.uniform(-4.0, -1.5), drop_vh=rng.uniform(-7.0, -3.0))
            if _near(candidate, placed, 0.8) or _near(candidate, self.parcels.items, 1.0):
                continue
            placed.append(candidate)
        return placed[start:]

    def _changes(self, rng: np.random.Generator, count: int) -> list[Slide]:
        """Compact SAR changes with no scar (works, wet soil): round blobs 3-8 px across."""
        out = []
        for _ in range(count):
            r = rng.uniform(3, 8)
            out.append(Slide(rng.uniform(0, self.width), rng.uniform(0, self.height), r, rng.uniform(3, 8),
                             rng.uniform(0, np.pi), int(rng.integers(1 << 31)), bare=0.0,
                             seen=tuple(rng.uniform(0.5, 1.0, 2)), drop_vv=rng.uniform(-4.0, -1.5),
                             drop_vh=rng.uniform(-7.0, -3.0)))
        return out

    # ------------------------------------------------------------------ drawing
    def render(self, top: int, bottom: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``[top, bottom)``: raw bands (rows, width, 12) float32 in the release's order and units, and the
        mask of the fresh slides (rows, width) bool. ``rng`` draws the noise (speckle, texture)."""
        yy, xx = np.mgrid[top:bottom, 0 : self.width].astype(np.float64)
        shape = yy.shape
        cover = self.land_cover(yy, xx)
        relief = self.relief(yy, xx)
        optical = OPTICAL[cover] * (1 + 0.1 * self.texture.at(yy, xx))[..., None]
        optical *= 1 + 0.06 * rng.standard_normal(optical.shape)
        textured = np.zeros(shape, bool)
        drop = np.zeros((2, *shape, 2))  # (pass, rows, width, polarisation): dB added after the event

        for parcel, box, m in draw_strip_objects(self.parcels.touching(top, bottom), top, bottom, self.width):
            a = m * parcel.opacity
            optical[box] = optical[box] * (1 - a[..., None]) + np.asarray(parcel.look) * a[..., None]
            textured[box] |= m
            if parcel.harvested:
                drop[(slice(None), *box)] += m[None, ..., None] * np.array([-2.8, -5.0]) * 0.75
        for scar, box, m in draw_strip_objects(self.old_scars.touching(top, bottom), top, bottom, self.width):
            a = m * scar.bare
            look = FRESH_SCAR * scar.brightness
            optical[box] = optical[box] * (1 - a[..., None]) + look * a[..., None]
            textured[box] |= m
        fresh = np.zeros(shape, bool)
        for slide, box, m in draw_strip_objects(self.slides.touching(top, bottom), top, bottom, self.width):
            a = m * slide.bare
            look = FRESH_SCAR * slide.brightness
            optical[box] = optical[box] * (1 - a[..., None]) + look * a[..., None]
            textured[box] |= m
            fresh[box] |= m
            for p in range(2):
                drop[(p, *box)] += m[..., None] * np.array([slide.drop_vv, slide.drop_vh]) * slide.seen[p]
        for blob, box, m in draw_strip_objects(self.changes.touching(top, bottom), top, bottom, self.width):
            for p in range(2):
                drop[(p, *box)] += m[..., None] * np.array([blob.drop_vv, blob.drop_vh]) * blob.seen[p]
        optical *= 1 + 0.06 * rng.standard_normal(optical.shape) * textured[..., None]
        optical = optical * self.gain + self.haze

        if math.isfinite(self.cloud_level):
            thick = (0.7 + 0.3 * self.thickness.at(yy, xx)).clip(0.3, 1.0)
            alpha = (np.clip((self.clouds.at(yy, xx) - self.cloud_level) * 2.0, 0, 1) * thick)[..., None]
            cloud = CLOUD * (1 + 0.03 * rng.standard_normal(optical.shape))
            optical = (1 - alpha) * optical + alpha * cloud
        optical = optical.clip(1, 15000)

        out = np.empty((*shape, len(RAW_NAMES)), np.float32)
        out[..., [raw_index(b) for b in ("red", "green", "blue", "nir")]] = optical
        for p, (orbit, facing) in enumerate((("desc", 1.0), ("asc", -1.0))):
            base = BACKSCATTER[cover] + (facing * 2.5 * relief)[..., None]
            base[..., 0] += 0.8 * facing
            base = base + self.sar_offset[p]
            post = base + drop[p] + self.sar_bias[p] + speckle_db(rng, base.shape, 5.0)
            pre = base + speckle_db(rng, base.shape, 5.0)
            out[..., raw_index(f"{orbit}_vv")] = post[..., 0]
            out[..., raw_index(f"{orbit}_vh")] = post[..., 1]
            out[..., raw_index(f"{orbit}_diff_vv")] = post[..., 0] - pre[..., 0]
            out[..., raw_index(f"{orbit}_diff_vh")] = post[..., 1] - pre[..., 1]
        return out, fresh
