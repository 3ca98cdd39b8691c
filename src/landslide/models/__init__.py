"""Plain ``nn.Module`` networks. They take (n, c, 64, 64) normalised tensors and know nothing about files.

:func:`build_network` is the only way a network is built from settings (a config or a checkpoint): it accepts
this project's network classes and plain arguments only, so settings read from a shared file cannot make it
call anything else.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from landslide.models.fpn import MultiModalCNN, MultiModalFPN
from landslide.models.fusion import FusionCNN
from landslide.models.plain import PlainCNN
from landslide.models.seed import SeedFPN

#: The networks that settings may name, by their ``_target_``.
NETWORKS: dict[str, type[nn.Module]] = {
    f"{cls.__module__}.{cls.__name__}": cls for cls in (MultiModalFPN, MultiModalCNN, SeedFPN, PlainCNN, FusionCNN)
}
_PLAIN = (bool, int, float, str, type(None))


def _plain(value: Any) -> bool:
    if isinstance(value, _PLAIN):
        return True
    # lists of plain values, nested lists included (e.g. the widths of each stage); never a mapping
    return isinstance(value, Sequence) and not isinstance(value, str) and all(_plain(v) for v in value)


def build_network(spec: Mapping[str, Any], channels: Sequence[str]) -> nn.Module:
    """The network ``spec["_target_"]`` (one of :data:`NETWORKS`) built with ``spec``'s other entries and
    ``channels``; anything else (another target, a nested object, an unknown argument) is refused."""
    spec = dict(spec)
    target = spec.pop("_target_", None)
    if target not in NETWORKS:
        raise ValueError(f"refusing to build network {target!r}: not one of this project's networks "
                         f"({', '.join(NETWORKS)})")
    cls = NETWORKS[target]
    accepted = set(inspect.signature(cls).parameters) - {"channels"}
    unknown = sorted(set(spec) - accepted)
    if unknown:
        raise ValueError(f"refusing to build {target}: unknown argument(s) {unknown}")
    odd = sorted(k for k, v in spec.items() if not _plain(v))
    if odd:
        raise ValueError(f"refusing to build {target}: argument(s) {odd} are not plain numbers, strings or lists")
    return cls(channels=list(channels), **spec)


__all__ = ["NETWORKS", "FusionCNN", "MultiModalCNN", "MultiModalFPN", "PlainCNN", "SeedFPN", "build_network"]
