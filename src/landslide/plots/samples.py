"""Draw one sample as a grid of its bands, in the manner of TorchGeo's ``plot()`` methods."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from landslide.bands import CHANNEL_NAMES

# ``gather(split, rows)``: those rows of a split as an (n, c, 64, 64) array or CPU tensor in physical units, e.g.
# ``LandslideDataModule.gather``
Gather = Callable[[str, list[int]], Any]


def _stretch(img: np.ndarray) -> np.ndarray:
    low, high = np.percentile(img, (2, 98))
    return np.clip((img - low) / max(high - low, 1e-6), 0, 1)


#: a panel: its title, its image and a matplotlib colormap (None: RGB)
Panel = tuple[str, np.ndarray, str | None]


def sample_panels(image: np.ndarray, channels: Sequence[str] = CHANNEL_NAMES, changes_only: bool = False
                  ) -> list[Panel]:
    """The panels of a (c, 64, 64) sample in physical units, as ``(title, image, colormap)``: RGB (2-98% stretch),
    NIR, cloud mask and SAR post / pre / diff per pass, those whose channels are in ``channels`` (``changes_only``:
    RGB, NIR and the SAR differences)."""
    image = np.asarray(image, dtype=np.float32)
    at = {name: image[i] for i, name in enumerate(channels)}
    panels: list[Panel] = []
    if all(b in at for b in ("red", "green", "blue")):
        rgb = np.stack([at["red"], at["green"], at["blue"]], -1)
        panels.append(("RGB", _stretch(rgb), None))
    for name, cmap in (("nir", "magma"), ("cloud_mask", "gray")):
        if name in at and not (changes_only and name == "cloud_mask"):
            panels.append((name.replace("_", " "), at[name], cmap))
    for orbit in ("desc", "asc"):
        for pol in ("vv", "vh"):
            post, pre = at.get(f"{orbit}_{pol}_post"), at.get(f"{orbit}_{pol}_pre")
            if post is None or pre is None:
                continue
            if not changes_only:
                panels.append((f"{orbit} {pol.upper()} post", post, "gray"))
                panels.append((f"{orbit} {pol.upper()} pre", pre, "gray"))
            panels.append((f"{orbit} {pol.upper()} diff", post - pre, "RdBu_r"))
    return panels


def show_panel(ax: Axes, img: np.ndarray, cmap: str | None) -> None:
    """One panel: a difference on a symmetric diverging scale, anything else as it is."""
    if cmap == "RdBu_r":
        lim = float(np.percentile(np.abs(img), 98)) or 1.0
        ax.imshow(img, cmap=cmap, vmin=-lim, vmax=lim)
    else:
        ax.imshow(img, cmap=cmap)


def plot_sample(
    image: np.ndarray,
    channels: tuple[str, ...] | list[str] = CHANNEL_NAMES,
    label: int | None = None,
    prediction: float | None = None,
    title: str | None = None,
    path: Path | str | None = None,
) -> Figure:
    """Plot a (c, 64, 64) sample in physical units: RGB, NIR, cloud mask and SAR post / pre / diff per pass.

    Panels whose channels are absent from ``channels`` are skipped. Saved as PNG when ``path`` is given.
    """
    panels = sample_panels(image, channels)
    cols = 5
    rows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, img, cmap) in zip(axes.flat, panels):
        show_panel(ax, img, cmap)
        ax.set_title(name, fontsize=9)
    parts = [title] if title else []
    if label is not None:
        parts.append(f"label: {label}")
    if prediction is not None:
        parts.append(f"prediction: {prediction:.2f}")
    if parts:
        fig.suptitle("   ".join(parts))
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    return fig


def split_sample(gather: Gather, i: int, split: str = "train",
                 labels: Sequence[int] | np.ndarray | None = None) -> tuple[np.ndarray, int | None]:
    """Row ``i`` of a split through ``gather`` (as a numpy array) and its label, when ``labels`` are given."""
    image = np.asarray(gather(split, [i])[0], dtype=np.float32)
    return image, int(labels[i]) if labels is not None else None


def plot_split_sample(gather: Gather, channels: Sequence[str], i: int, split: str = "train", *,
                      labels: Sequence[int] | np.ndarray | None = None, ids: Sequence[str] | None = None,
                      prediction: float | None = None, path: Path | str | None = None) -> Figure:
    """Plot row ``i`` of a split as a band grid (:func:`plot_sample`): its image from ``gather`` in ``channels``,
    titled with ``ids[i]`` and labelled with ``labels[i]`` when those are given. For a datamodule ``dm``:
    ``plot_split_sample(dm.gather, dm.channels, i, labels=dm.labels, ids=dm.train_ids)``."""
    image, label = split_sample(gather, i, split, labels)
    return plot_sample(image, channels, label, prediction, title=ids[i] if ids is not None else None, path=path)


def plot_sample_rows(images: Sequence[np.ndarray], channels: Sequence[str], titles: Sequence[str],
                     path: Path | str | None = None) -> Figure:
    """Several (c, 64, 64) samples, one row each (RGB, NIR and the SAR differences: :func:`sample_panels` with
    ``changes_only``), each row titled; e.g. the label audit's top candidates. Saved as PNG when ``path`` is given."""
    rows = [sample_panels(image, channels, changes_only=True) for image in images]
    cols = max((len(r) for r in rows), default=1)
    fig, axes = plt.subplots(max(len(rows), 1), cols, figsize=(2.0 * cols, 2.2 * max(len(rows), 1)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, (panels, title) in enumerate(zip(rows, titles)):
        for c, (name, img, cmap) in enumerate(panels):
            show_panel(axes[r, c], img, cmap)
            axes[r, c].set_title(name, fontsize=9)
        axes[r, 0].text(-0.08, 0.5, title, transform=axes[r, 0].transAxes, rotation=90, ha="right", va="center",
                        fontsize=8)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
    return fig
