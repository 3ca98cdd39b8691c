"""Plain ``nn.Module`` networks. They take (n, c, 64, 64) normalised tensors and know nothing about files.

:func:`build_network` is the only way a network is built from settings (a config or a checkpoint): it accepts
registered network classes (:data:`NETWORKS`) and plain arguments only, so settings read from a shared file cannot
make it call anything else. The registry holds this project's networks; a user adds their own with the
:func:`register_network` decorator (their code, imported by them) or by naming the class in a config they run
(``model.trusted_networks`` for training, ``trusted_networks`` for ``predict.py`` and ``map.py``), which
:func:`trust_networks` imports and registers; training also imports the module of the network its config names,
so that a decorated class there registers itself. A checkpoint never adds to the registry.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from torch import nn

from landslide.models.fpn import MultiModalCNN, MultiModalFPN
from landslide.models.fusion import FusionCNN
from landslide.models.plain import PlainCNN
from landslide.models.seed import SeedFPN
from landslide.models.segment import SegmentUNet

#: The networks that settings may name, by their ``_target_`` (``module.ClassName``).
NETWORKS: dict[str, type[nn.Module]] = {}
_PLAIN = (bool, int, float, str, type(None))
Net = TypeVar("Net", bound=type)


def register_network(cls: Net) -> Net:
    """Class decorator: let settings (a config, a checkpoint) name ``cls``, an ``nn.Module`` whose constructor
    takes ``channels`` (the channel names) and plain arguments, by its dotted path ``module.ClassName``."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"{cls!r} is not an nn.Module class")
    if "channels" not in inspect.signature(cls).parameters:
        raise ValueError(f"{cls.__module__}.{cls.__qualname__} does not take channels (the channel names)")
    NETWORKS[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return cls


def trust_networks(names: Sequence[str]) -> None:
    """Import the network classes ``names`` (dotted paths, as a config the user runs lists them) and register them
    (under each name as written too). Importing a module also runs its :func:`register_network` decorators."""
    for name in names:
        module_name, _, attr = str(name).rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as err:
            raise ValueError(f"trusted network {name!r} cannot be imported ({err})") from None
        register_network(cls)
        NETWORKS[str(name)] = cls


def import_network_module(target: str) -> None:
    """Import the module of ``target`` (a network named by a config the user runs, never by a checkpoint) so that
    its :func:`register_network` decorators run; nothing if it is registered already or cannot be imported
    (:func:`build_network` then refuses it and says why)."""
    module_name = str(target).rpartition(".")[0]
    if target in NETWORKS or not module_name:
        return
    with contextlib.suppress(ImportError):
        importlib.import_module(module_name)


for _cls in (MultiModalFPN, MultiModalCNN, SeedFPN, PlainCNN, FusionCNN, SegmentUNet):
    register_network(_cls)


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
        raise ValueError(f"refusing to build network {target!r}: not a registered network ({', '.join(NETWORKS)}); "
                         "a network of your own: decorate it with landslide.models.register_network, or name it in "
                         "model.trusted_networks (train.py) or trusted_networks (predict.py, map.py)")
    cls = NETWORKS[target]
    accepted = set(inspect.signature(cls).parameters) - {"channels"}
    unknown = sorted(set(spec) - accepted)
    if unknown:
        raise ValueError(f"refusing to build {target}: unknown argument(s) {unknown}")
    odd = sorted(k for k, v in spec.items() if not _plain(v))
    if odd:
        raise ValueError(f"refusing to build {target}: argument(s) {odd} are not plain numbers, strings or lists")
    return cls(channels=list(channels), **spec)


__all__ = ["NETWORKS", "FusionCNN", "MultiModalCNN", "MultiModalFPN", "PlainCNN", "SeedFPN", "SegmentUNet",
           "build_network",
           "import_network_module", "register_network", "trust_networks"]
