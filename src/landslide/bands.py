"""The band registry: raw release bands, model channels and named band sets.

This is the only module that knows band positions; everything else asks it by name.
"""

from __future__ import annotations

from dataclasses import dataclass

PATCH_SIZE = 64


@dataclass(frozen=True)
class Band:
    """One band: its name, modality and a human description."""

    name: str
    modality: str  # "optical" | "sar_desc" | "sar_asc" | "mask"
    description: str


#: The 12 bands of a release ``.npy`` file, in file order (last axis).
RAW_BANDS: tuple[Band, ...] = (
    Band("red", "optical", "Sentinel-2 B04 red, L2A reflectance x 10000"),
    Band("green", "optical", "Sentinel-2 B03 green"),
    Band("blue", "optical", "Sentinel-2 B02 blue"),
    Band("nir", "optical", "Sentinel-2 B08 near infrared"),
    Band("desc_vv", "sar_desc", "Sentinel-1 descending VV backscatter after the event, dB"),
    Band("desc_vh", "sar_desc", "Sentinel-1 descending VH after the event, dB"),
    Band("desc_diff_vv", "sar_desc", "descending VV change, post - pre, dB"),
    Band("desc_diff_vh", "sar_desc", "descending VH change, post - pre, dB"),
    Band("asc_vv", "sar_asc", "Sentinel-1 ascending VV after the event, dB"),
    Band("asc_vh", "sar_asc", "Sentinel-1 ascending VH after the event, dB"),
    Band("asc_diff_vv", "sar_asc", "ascending VV change, post - pre, dB"),
    Band("asc_diff_vh", "sar_asc", "ascending VH change, post - pre, dB"),
)
RAW_NAMES: tuple[str, ...] = tuple(b.name for b in RAW_BANDS)

#: The 13 model channels produced by preprocessing, in array order (axis 1).
CHANNELS: tuple[Band, ...] = (
    Band("cloud_mask", "optical", "1 where the optical view is hidden by a bright cloud"),
    Band("red", "optical", "red reflectance"),
    Band("green", "optical", "green reflectance"),
    Band("blue", "optical", "blue reflectance"),
    Band("nir", "optical", "near-infrared reflectance"),
    Band("desc_vv_post", "sar_desc", "descending VV after the event, dB"),
    Band("desc_vh_post", "sar_desc", "descending VH after the event, dB"),
    Band("desc_vv_pre", "sar_desc", "descending VV before the event (post - diff), dB"),
    Band("desc_vh_pre", "sar_desc", "descending VH before the event (post - diff), dB"),
    Band("asc_vv_post", "sar_asc", "ascending VV after the event, dB"),
    Band("asc_vh_post", "sar_asc", "ascending VH after the event, dB"),
    Band("asc_vv_pre", "sar_asc", "ascending VV before the event (post - diff), dB"),
    Band("asc_vh_pre", "sar_asc", "ascending VH before the event (post - diff), dB"),
)
CHANNEL_NAMES: tuple[str, ...] = tuple(b.name for b in CHANNELS)

#: Channels that are not normalised (binary masks).
UNNORMALISED: frozenset[str] = frozenset({"cloud_mask"})

#: The channels of one SAR pass, in the order the shared SAR branch expects.
SAR_PASS_ORDER: tuple[str, ...] = ("vv_post", "vh_post", "vv_pre", "vh_pre")

BAND_SETS: dict[str, tuple[str, ...]] = {
    "optical": ("cloud_mask", "red", "green", "blue", "nir"),
    "sar_desc": tuple(f"desc_{s}" for s in SAR_PASS_ORDER),
    "sar_asc": tuple(f"asc_{s}" for s in SAR_PASS_ORDER),
}
BAND_SETS["sar"] = BAND_SETS["sar_desc"] + BAND_SETS["sar_asc"]
BAND_SETS["all"] = CHANNEL_NAMES

#: BigEarthNet v2 (reBEN) statistics of the matching bands, as the reference used them
#: (S2 L2A digital numbers; S1 dB). Pre- and post-event SAR channels share their band's values.
BIGEARTHNET_V2_STATS: dict[str, tuple[float, float]] = {
    "red": (614.2, 717.8),
    "green": (589.2, 627.0),
    "blue": (361.6, 575.5),
    "nir": (2399.4, 1346.2),
    "vv": (-12.55, 5.22),
    "vh": (-19.29, 5.46),
}


def raw_index(name: str) -> int:
    """Position of a raw release band."""
    try:
        return RAW_NAMES.index(name)
    except ValueError:
        raise KeyError(f"unknown raw band {name!r}; known: {', '.join(RAW_NAMES)}") from None


def channel_index(name: str) -> int:
    """Position of a model channel in the 13-channel array."""
    try:
        return CHANNEL_NAMES.index(name)
    except ValueError:
        raise KeyError(f"unknown channel {name!r}; known: {', '.join(CHANNEL_NAMES)}") from None


def band_set(name: str) -> tuple[str, ...]:
    """Channel names of a named band set (``all``, ``sar``, ``optical``, ``sar_desc``, ``sar_asc``)."""
    try:
        return BAND_SETS[name]
    except KeyError:
        raise KeyError(f"unknown band set {name!r}; choose one of {', '.join(BAND_SETS)}") from None


def channel_indices(names: tuple[str, ...] | list[str]) -> list[int]:
    """Positions of the given channels in the 13-channel array."""
    return [channel_index(n) for n in names]


def bigearthnet_stats(channels: tuple[str, ...] | list[str]) -> tuple[list[float], list[float]]:
    """BigEarthNet v2 means and standard deviations for the given channels (masks get 0 and 1)."""
    means, stds = [], []
    for name in channels:
        if name in UNNORMALISED:
            means.append(0.0)
            stds.append(1.0)
            continue
        key = name if name in BIGEARTHNET_V2_STATS else name.split("_")[1]
        mean, std = BIGEARTHNET_V2_STATS[key]
        means.append(mean)
        stds.append(std)
    return means, stds


def branch_channels(channels: tuple[str, ...] | list[str]) -> dict[str, tuple[str, ...]]:
    """Split a channel list into the model branches it feeds: ``optical``, ``sar_desc``, ``sar_asc``.

    A branch is present only when all of its channels are; a partial branch is an error.
    """
    present = set(channels)
    unknown = present - set(CHANNEL_NAMES)
    if unknown:
        raise KeyError(f"unknown channels {sorted(unknown)}")
    branches: dict[str, tuple[str, ...]] = {}
    for branch in ("optical", "sar_desc", "sar_asc"):
        needed = BAND_SETS[branch]
        found = [c for c in needed if c in present]
        if len(found) == len(needed):
            branches[branch] = needed
        elif found:
            missing = sorted(set(needed) - present)
            raise ValueError(f"branch {branch!r} needs channels {missing} as well as {found}")
    if not branches:
        raise ValueError(f"no model branch can be built from channels {list(channels)}")
    return branches


def change_pairs(channels: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """``(post, pre)`` channel names of every SAR pass and polarisation whose both acquisitions are in ``channels``
    (their difference is the backscatter change)."""
    present = set(channels)
    pairs = []
    for orbit in ("desc", "asc"):
        for pol in ("vv", "vh"):
            post, pre = f"{orbit}_{pol}_post", f"{orbit}_{pol}_pre"
            if post in present and pre in present:
                pairs.append((post, pre))
    return pairs


#: Optical indices a network can compute from its channels: name -> (first, second) band; the index grows with
#: ``first - second`` (NIR - red: vegetation; red - NIR: bare soil is its mirror).
OPTICAL_INDICES: dict[str, tuple[str, str]] = {"vegetation": ("nir", "red"), "greenness": ("green", "red")}


def optical_index_pairs(channels: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """The band pairs of :data:`OPTICAL_INDICES` whose both bands are in ``channels``."""
    present = set(channels)
    return [pair for pair in OPTICAL_INDICES.values() if set(pair) <= present]
