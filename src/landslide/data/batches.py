"""Batches of indices (the sampler), apart from the data they index: the datamodule gathers the images of each batch
from its resident tensor."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import IterableDataset


def process_rank() -> tuple[int, int]:
    """``(rank, world size)`` of this process in the running process group; ``(0, 1)`` outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class IndexBatches(IterableDataset):
    """Yields batches of indices (not samples): the datamodule gathers them from the resident tensor.

    Unshuffled batches cover the indices once, in order, the last one shorter. Shuffled (training) batches all
    have one size, ``min(batch_size, n)``, and are cut from an endless stream of permutations (permutation ``k``
    seeded by ``seed + k``), an epoch being ``round(n / batch_size)`` of them. Nothing is dropped for a short last
    batch (with batches of 1,024 on a filtered fold of 2,000 images that would be almost half of every epoch),
    batch norm never sees a tiny batch, and a compiled graph sees one shape.

    **Several processes** (distributed data parallel; the rank and world size are read from the process group when
    iterating): ``batch_size`` is per process (at most ``n // world``). A training step cuts one global batch of
    ``world x batch_size`` positions from the same stream and process ``r`` takes its ``r``-th part, so within a
    step the processes see distinct images and an epoch is ``round(n / (world x batch_size))`` steps; one process
    gives exactly the batches above.
    Unshuffled batches split the indices into ``world`` contiguous parts, one per process, each batched in order.
    """

    def __init__(self, source: str, indices: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0) -> None:
        self.source = source
        self.indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        self.shuffle = shuffle
        self.batch_size = min(batch_size, len(self.indices)) if shuffle else batch_size
        self.seed = seed
        self.epoch = 0
        # where the epoch number comes from when training (the trainer's), else iterations counted here
        self.epoch_source: Callable[[], int] | None = None
        # where (rank, world size) come from; replaceable for tests
        self.rank_source: Callable[[], tuple[int, int]] = process_rank

    def _own_indices(self) -> Tensor:
        """The part of the (unshuffled) indices this process covers."""
        rank, world = self.rank_source()
        return self.indices if world == 1 else torch.tensor_split(self.indices, world)[rank]

    def _process_batch(self, world: int) -> int:
        """Training images per process and step."""
        return max(1, min(self.batch_size, len(self.indices) // world))

    def __len__(self) -> int:
        if self.shuffle:
            n, world = len(self.indices), self.rank_source()[1]
            return max(1, round(n / (self._process_batch(world) * world))) if n else 0
        return -(-len(self._own_indices()) // self.batch_size)

    def _stream(self, start: int, stop: int) -> Tensor:
        """Positions ``start:stop`` of the endless stream of permutations."""
        n = len(self.indices)
        first, last = start // n, (stop - 1) // n
        perms = [self.indices[torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + k))]
                 for k in range(first, last + 1)]
        return torch.cat(perms)[start - first * n : stop - first * n]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        batches = len(self)
        if not self.shuffle:
            b, own = self.batch_size, self._own_indices()
            for i in range(batches):
                yield {"source": self.source, "index": own[i * b : (i + 1) * b]}
            return
        rank, world = self.rank_source()
        b = self._process_batch(world)
        epoch = self.epoch_source() if self.epoch_source is not None else self.epoch
        step = b * world
        order = self._stream(epoch * batches * step, (epoch + 1) * batches * step)
        self.epoch = epoch + 1
        for i in range(batches):
            yield {"source": self.source, "index": order[i * step + rank * b : i * step + (rank + 1) * b]}
