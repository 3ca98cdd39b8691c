"""Whole-batch augmentation on the device and the 8 dihedral test-time views.

Every function returns a new tensor: the source (the cached, device-resident data) is never modified.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

TTA_VIEWS = 8
"""The number of dihedral views (4 flips x 2 rotations) that test-time augmentation predicts."""


def dihedral_view(x: Tensor, k: int) -> Tensor:
    """View ``k`` (0-7) of the dihedral group on the last two axes: flips (none, h, v, both) x (no rotation, 90)."""
    flip_dims = ((), (-1,), (-2,), (-2, -1))[k % 4]
    out = x.flip(flip_dims) if flip_dims else x
    return torch.rot90(out, 1, (-2, -1)) if k >= 4 else out


def tta_views(x: Tensor) -> Tensor:
    """(8, n, c, h, w): all 8 dihedral views of a batch, for test-time augmentation."""
    return torch.stack([dihedral_view(x, k) for k in range(TTA_VIEWS)])


def dihedral_sources(size: int, device: torch.device | str = "cpu") -> Tensor:
    """(8, size * size) int64: for each of the 8 draws ``4 * transpose + 2 * flip_rows + flip_cols`` of
    :class:`BatchAugment`, the flat source pixel of every output pixel (columns flipped first, then rows, then the
    transpose, as the three coins apply them)."""
    i = torch.arange(size, device=device).view(size, 1).expand(size, size)
    j = torch.arange(size, device=device).view(1, size).expand(size, size)
    maps = []
    for draw in range(8):
        flip_cols, flip_rows, transpose = draw & 1, draw >> 1 & 1, draw >> 2 & 1
        a, b = (j, i) if transpose else (i, j)  # the output pixel (i, j) reads (a, b) of the flipped image ...
        a = size - 1 - a if flip_rows else a  # ... which reads row size-1-a of the column-flipped one ...
        b = size - 1 - b if flip_cols else b  # ... which reads column size-1-b of the source
        maps.append((a * size + b).reshape(-1))
    return torch.stack(maps)


class BatchAugment(nn.Module):
    """Random flips, 90-degree rotations and patch erasing applied per sample to a whole batch at once.

    Erased patches take ``fill`` (per-channel values, normally the training means) so that after
    normalisation they read as zero. A patch covers a share of the image drawn from ``erase_scale``, with the log of
    its aspect ratio (height / width) drawn from ``erase_log_ratio``. The settings come from the config
    (``data.augment``).

    ``dihedral_gather`` (the default): the three coins (flip columns, flip rows, transpose) make one dihedral draw
    per image, applied as one gather of the batch through that draw's source-pixel map, and the erased boxes are
    filled in place: one copy of the batch. Otherwise each coin is a ``torch.where`` between the batch and its
    flipped copy, and erasing another: about eight copies. Both draw the same random numbers in the same order and
    give the same images.
    """

    def __init__(
        self,
        *,
        flip: bool,
        rotate: bool,
        erase_p: float,
        erase_scale: tuple[float, float],
        erase_log_ratio: tuple[float, float],
        dihedral_gather: bool,
    ) -> None:
        super().__init__()
        self.flip = flip
        self.rotate = rotate
        self.dihedral_gather = dihedral_gather
        self.erase_p = erase_p
        self.erase_scale = tuple(erase_scale)
        self.erase_log_ratio = tuple(erase_log_ratio)
        self.fill = torch.zeros(0)
        self._fill_on: dict[tuple[str, torch.dtype], Tensor] = {}
        self._sources: dict[tuple[str, int], Tensor] = {}

    def set_fill(self, fill: Tensor) -> None:
        self.fill = fill.detach().clone().float().cpu()
        self._fill_on = {}

    def _fill(self, c: int, like: Tensor) -> Tensor:
        """The fill values on ``like``'s device and dtype, copied there once per fold, not once per batch."""
        key = (str(like.device), like.dtype)
        if key not in self._fill_on:
            fill = self.fill if self.fill.numel() == c else torch.zeros(c)
            self._fill_on[key] = fill.to(device=like.device, dtype=like.dtype).view(1, c, 1, 1)
        return self._fill_on[key]

    def forward(self, x: Tensor, generator: torch.Generator | None = None, fill: Tensor | None = None,
                masks: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
        """An augmented copy of ``x``; ``fill`` (n, c), if given, replaces the fill values per sample (stacked folds
        each erase with their own training means). With ``masks`` (n, h, w), returns ``(x, masks)``: each mask
        flipped and turned with its image, and 0 where its image was erased (the slide there is hidden)."""
        if masks is not None:
            c = x.shape[1]
            both = self._augment(torch.cat([x, masks[:, None].to(x.dtype)], 1), generator, fill, c)
            return both[:, :c], both[:, c].round().to(masks.dtype)
        return self._augment(x, generator, fill, x.shape[1])

    def _augment(self, x: Tensor, generator: torch.Generator | None, fill: Tensor | None, c: int) -> Tensor:
        """The geometric draws on all of ``x``'s channels; erasing fills the first ``c`` with the fill values and
        sets the others (masks) to 0."""
        n = x.shape[0]

        def coin(p: float = 0.5) -> Tensor:
            return (torch.rand(n, device=x.device, generator=generator) < p).view(n, 1, 1, 1)

        rotate = self.rotate and x.shape[-1] == x.shape[-2]
        if self.dihedral_gather and (self.flip or rotate):
            draw = torch.zeros(n, dtype=torch.long, device=x.device)
            if self.flip:
                draw += coin().view(n).long()  # flip columns
                draw += 2 * coin().view(n).long()  # flip rows
            if rotate:
                draw += 4 * coin().view(n).long()  # transpose: with the flips all 8 dihedral views
            x = self._dihedral(x, draw)
            if self.erase_p > 0:  # in place: the gather made x a new tensor
                box, values = self._boxes(x, coin(self.erase_p).view(n), generator, fill, c)
                torch.where(box.unsqueeze(1), values, x, out=x)
            return x
        if self.flip:
            x = torch.where(coin(), x.flip(-1), x)
            x = torch.where(coin(), x.flip(-2), x)
        if rotate:
            x = torch.where(coin(), x.transpose(-1, -2), x)  # with the flips: all 8 dihedral views
        if self.erase_p > 0:
            box, values = self._boxes(x, coin(self.erase_p).view(n), generator, fill, c)
            x = torch.where(box.unsqueeze(1), values, x)
        return x

    def _dihedral(self, x: Tensor, draw: Tensor) -> Tensor:
        """Image k of ``x`` under dihedral draw ``draw[k]``: one gather, a new tensor."""
        n, c, h, w = x.shape
        key = (str(x.device), h)
        if key not in self._sources:
            self._sources[key] = dihedral_sources(h, x.device)
        source = self._sources[key][draw]  # (n, h * w)
        flat = x.reshape(n, c, h * w)
        return torch.gather(flat, 2, source.unsqueeze(1).expand(n, c, h * w)).view(n, c, h, w)

    def _boxes(self, x: Tensor, apply: Tensor, generator: torch.Generator | None, fill: Tensor | None,
               c: int | None = None) -> tuple[Tensor, Tensor]:
        """The erased box of each image (n, h, w) (all False where ``apply`` is) and the fill values (1 or n, C, 1,
        1): the first ``c`` channels' fill, 0 for the others."""
        n, channels, h, w = x.shape
        c = channels if c is None else c
        dev = x.device
        area = torch.empty(n, device=dev).uniform_(*self.erase_scale, generator=generator) * h * w
        ratio = torch.exp(torch.empty(n, device=dev).uniform_(*self.erase_log_ratio, generator=generator))
        eh = (area * ratio).sqrt().round().clamp(1, h).long()
        ew = (area / ratio).sqrt().round().clamp(1, w).long()
        top = (torch.rand(n, device=dev, generator=generator) * (h - eh + 1)).long()
        left = (torch.rand(n, device=dev, generator=generator) * (w - ew + 1)).long()
        rows = torch.arange(h, device=dev).view(1, h, 1)
        cols = torch.arange(w, device=dev).view(1, 1, w)
        box = (
            (rows >= top.view(n, 1, 1)) & (rows < (top + eh).view(n, 1, 1))
            & (cols >= left.view(n, 1, 1)) & (cols < (left + ew).view(n, 1, 1))
            & apply.view(n, 1, 1)
        )
        values = self._fill(c, x) if fill is None else fill.to(device=dev, dtype=x.dtype).view(n, c, 1, 1)
        if channels > c:  # masks ride along: erased to 0
            values = torch.cat([values.expand(values.shape[0], c, 1, 1),
                                values.new_zeros(values.shape[0], channels - c, 1, 1)], 1)
        return box, values
