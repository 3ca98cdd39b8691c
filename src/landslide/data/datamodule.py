"""LandslideDataModule: the cached release as device-resident tensors, stratified folds, batch augmentation."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from filelock import FileLock
from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from landslide.bands import CHANNEL_NAMES, band_set, bigearthnet_stats, channel_indices
from landslide.data.augment import BatchAugment
from landslide.data.cache import CachedSplit, load_or_build_split
from landslide.data.plot import plot_sample
from landslide.data.preprocess import channel_stats
from landslide.data.release import ReleaseError, SplitIndex, read_release_index
from landslide.data.synthetic import generate_release
from landslide.errors import ConfigError

log = logging.getLogger(__name__)


class IndexBatches(IterableDataset):
    """Yields batches of indices (not samples): the datamodule gathers them from the resident tensor.

    Unshuffled batches cover the indices once, in order, the last one shorter. Shuffled (training) batches all
    have one size, ``min(batch_size, n)``, and are cut from an endless stream of permutations (permutation ``k``
    seeded by ``seed + k``), an epoch being ``round(n / batch_size)`` of them. Nothing is dropped for a short last
    batch (with batches of 1,024 on a filtered fold of 2,000 images that would be almost half of every epoch),
    batch norm never sees a tiny batch, and a compiled graph sees one shape.
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

    def __len__(self) -> int:
        n = len(self.indices)
        if self.shuffle:
            return max(1, round(n / max(self.batch_size, 1))) if n else 0
        return -(-n // self.batch_size)

    def _stream(self, start: int, stop: int) -> Tensor:
        """Positions ``start:stop`` of the endless stream of permutations."""
        n = len(self.indices)
        first, last = start // n, (stop - 1) // n
        perms = [self.indices[torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + k))]
                 for k in range(first, last + 1)]
        return torch.cat(perms)[start - first * n : stop - first * n]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        b, batches = self.batch_size, len(self)
        if self.shuffle:
            epoch = self.epoch_source() if self.epoch_source is not None else self.epoch
            order = self._stream(epoch * batches * b, (epoch + 1) * batches * b)
            self.epoch = epoch + 1
        else:
            order = self.indices
        for i in range(batches):
            yield {"source": self.source, "index": order[i * b : (i + 1) * b]}


class LandslideDataModule(L.LightningDataModule):
    """Reads (or generates) a release, caches it, and serves folds of it as device-resident tensors.

    Batches are dicts: ``x`` (n, c, 64, 64) in physical units, ``y`` (float labels, when known), ``keep`` (False
    where the negative filter removed the image), ``index`` (row in the split). Normalisation is the model's job,
    with statistics this module fits on the fold's training part (see :meth:`set_fold`).
    """

    def __init__(
        self,
        root: str | Path,
        cache_dir: str | Path,
        bands: str = "all",
        num_folds: int = 10,
        fold: int | None = None,
        split_seed: int = 42,
        *,
        fold_seed_stride: int,
        holdout_fraction: float = 0.0,
        batch_size: int,
        eval_batch_size: int,
        stats: str = "train",
        cloud_threshold: float = 3500.0,
        nan_policy: str = "error",
        read_workers: int = 4,
        synthetic: dict | None = None,
        augment: dict | None = None,
        device_resident: bool = True,
        progress: bool = True,
    ) -> None:
        super().__init__()
        if stats not in ("train", "bigearthnet"):
            raise ValueError(f"data.stats must be 'train' or 'bigearthnet', got {stats!r}")
        if nan_policy not in ("error", "fill"):
            raise ValueError(f"data.nan_policy must be 'error' or 'fill', got {nan_policy!r}")
        if num_folds < 2:
            raise ValueError(f"data.num_folds must be at least 2, got {num_folds}")
        if fold is not None and not 0 <= fold < num_folds:
            raise ValueError(f"data.fold must be in [0, {num_folds}), got {fold}")
        self.root = Path(root)
        self.cache_dir = Path(cache_dir)
        self.bands = bands
        self.channels: tuple[str, ...] = band_set(bands)
        self.num_folds = num_folds
        self.fold = fold
        self.split_seed = split_seed
        self.fold_seed_stride = fold_seed_stride
        if not 0 <= holdout_fraction < 1:
            raise ValueError(f"data.holdout_fraction must be in [0, 1), got {holdout_fraction}")
        self.holdout_fraction = holdout_fraction
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.stats = stats
        self.cloud_threshold = cloud_threshold
        self.nan_policy = nan_policy
        self.read_workers = read_workers
        self.synthetic = dict(synthetic or {})
        self.augment = BatchAugment(**(augment or {}))
        self.device_resident = device_resident
        self.progress = progress
        self._indices: dict[str, SplitIndex] = {}
        self._splits: dict[str, CachedSplit] = {}
        self._host: dict[str, Tensor] = {}
        self._device: dict[tuple[str, str], Tensor] = {}
        self._picks: Tensor | None = None
        self.train_index = np.zeros(0, np.int64)
        self.val_index = np.zeros(0, np.int64)
        self.predict_source = "test"
        self.predict_index: np.ndarray | None = None
        self.keep: dict[str, np.ndarray] = {}
        self.norm_mean: list[float] = []
        self.norm_std: list[float] = []
        self.epoch_seed = split_seed

    # ---------------------------------------------------------------- data on disk
    def _is_synthetic_root(self) -> bool:
        target = self.synthetic.get("root")
        return bool(target) and Path(target).resolve() == self.root.resolve()

    def prepare_data(self) -> None:
        """Generate the embedded synthetic release if it is the configured root and absent; build the cache. Jobs
        started together (a multirun) take turns through a lock file in the cache folder: the first one makes the
        data, the others find it."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(self.cache_dir / ".prepare.lock"):
            self._prepare()

    def _prepare(self) -> None:
        if not (self.root / "Train.csv").is_file():
            if self._is_synthetic_root():
                n_train, n_test = int(self.synthetic["n_train"]), int(self.synthetic["n_test"])
                log.info("generating the embedded synthetic release (%d train, %d test) in %s",
                         n_train, n_test, self.root)
                generate_release(self.root, n_train, n_test, int(self.synthetic.get("seed", 0)),
                                 difficulty=self.synthetic.get("difficulty", "easy"),
                                 label_noise=float(self.synthetic.get("label_noise", 0.0)))
            else:
                raise ReleaseError(
                    f"{self.root / 'Train.csv'}: file not found; data.root must be a release folder with "
                    "Train.csv, Test.csv, train_data/ and test_data/"
                )
        self.split("train")

    def split(self, name: str) -> CachedSplit:
        """A split's cached channels, built on first use (the test split only when something asks for it).
        Both CSVs are validated against each other first."""
        if name not in self._splits:
            if not self._indices:
                self._indices = dict(zip(("train", "test"), read_release_index(self.root)))
            self._splits[name] = load_or_build_split(self._indices[name], self.cache_dir, self.cloud_threshold,
                                                     self.nan_policy, self.read_workers, self.progress)
        return self._splits[name]

    def _host_tensor(self, name: str) -> Tensor:
        """``labels``, or a split's images as a tensor over the cache's copy-on-write memory map: nothing is read
        until a batch or a device copy needs it."""
        if name not in self._host:
            self._host[name] = torch.from_numpy(self.split(name).images)
        return self._host[name]

    def setup(self, stage: str | None = None) -> None:
        if "labels" in self._host:
            return
        train = self.split("train")
        self._host["labels"] = torch.from_numpy(train.labels.astype(np.float32))
        picks = channel_indices(self.channels)
        # the band set's channels, or None when it is all of them in order (no selection needed)
        self._picks = None if picks == list(range(len(CHANNEL_NAMES))) else torch.tensor(picks, dtype=torch.long)
        self.keep = {"train": np.ones(len(train.ids), bool)}
        self.set_fold(self.fold if self.fold is not None else 0)

    # ---------------------------------------------------------------- folds
    @property
    def labels(self) -> np.ndarray:
        return self.split("train").labels

    @property
    def labels_tensor(self) -> Tensor:
        return self._host["labels"]

    @property
    def train_ids(self) -> list[str]:
        return self.split("train").ids

    @property
    def test_ids(self) -> list[str]:
        return self.split("test").ids

    @property
    def holdout_index(self) -> np.ndarray:
        """Training rows set aside from every fold (``holdout_fraction``), stratified and fixed by ``split_seed``."""
        y = self.labels
        if self.holdout_fraction == 0:
            return np.zeros(0, np.int64)
        splitter = StratifiedShuffleSplit(1, test_size=self.holdout_fraction, random_state=self.split_seed)
        return np.sort(next(splitter.split(np.zeros(len(y)), y))[1])

    def folds(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Stratified (train, validation) index pairs of every fold, fixed by ``split_seed``; held-out rows
        (``holdout_fraction``) are in none of them."""
        y = self.labels
        rows = np.setdiff1d(np.arange(len(y)), self.holdout_index)
        smallest = int(min(y[rows].sum(), len(rows) - y[rows].sum()))
        if smallest < self.num_folds:
            raise ConfigError(f"data.num_folds={self.num_folds}: every fold needs images of each class, and the "
                              f"smaller class has {smallest} (choose 2 to {smallest} folds)")
        splitter = StratifiedKFold(self.num_folds, shuffle=True, random_state=self.split_seed)
        return [(rows[tr], rows[va]) for tr, va in splitter.split(np.zeros(len(rows)), y[rows])]

    def set_fold(self, fold: int, train_keep: np.ndarray | None = None, val_keep: np.ndarray | None = None) -> None:
        """Select fold ``fold``; train only on the training images ``train_keep`` marks (all by default).

        ``val_keep`` marks the validation images the filter kept; the others count as predicted negative.
        Normalisation statistics are fitted on the images the network trains on.
        """
        train_part, val_part = self.folds()[fold]
        self.fold = fold
        self.epoch_seed = self.split_seed + self.fold_seed_stride * fold
        if train_keep is not None:
            train_part = train_part[np.asarray(train_keep, bool)]
        self.train_index, self.val_index = train_part, val_part
        keep = np.ones(len(self.labels), bool)
        if val_keep is not None:
            keep[val_part] = np.asarray(val_keep, bool)
        self.keep["train"] = keep
        self._forget("keep_train")
        self.fit_stats(self.train_index)

    def fit_stats(self, index: np.ndarray) -> None:
        if self.stats == "bigearthnet":
            self.norm_mean, self.norm_std = bigearthnet_stats(self.channels)
        else:
            images = self.gather("train", np.sort(index)).numpy()
            self.norm_mean, self.norm_std = channel_stats(images, self.channels)
        self.augment.set_fill(torch.tensor(self.norm_mean))

    def predict_on(self, source: str, index: np.ndarray | None = None) -> None:
        """Make ``predict_dataloader`` serve ``source`` ('train' or 'test'), optionally a subset of it."""
        if source not in ("train", "test"):
            raise ValueError(f"unknown split {source!r}")
        self.predict_source, self.predict_index = source, index

    # ---------------------------------------------------------------- loaders
    def _loader(self, source: str, index: np.ndarray, batch_size: int, shuffle: bool) -> DataLoader:
        dataset = IndexBatches(source, index, batch_size, shuffle, self.epoch_seed)
        # a private generator: creating an iterator then draws nothing from the global random state, so a resumed
        # fit (which creates its iterators at other moments) draws the same augmentations as an uninterrupted one
        return DataLoader(dataset, batch_size=None, num_workers=0, generator=torch.Generator())

    def train_dataloader(self) -> DataLoader:
        if len(self.train_index) == 0:
            raise ValueError("no training images in this fold (did the filter remove everything?)")
        loader = self._loader("train", self.train_index, self.batch_size, shuffle=True)
        if getattr(self, "trainer", None) is not None:  # a resumed fold continues the stream where it stopped
            loader.dataset.epoch_source = lambda: self.trainer.current_epoch
        return loader

    def val_dataloader(self) -> DataLoader:
        return self._loader("train", self.val_index, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        n = len(self._host_tensor(self.predict_source))
        index = np.arange(n) if self.predict_index is None else self.predict_index
        return self._loader(self.predict_source, index, self.eval_batch_size, shuffle=False)

    # ---------------------------------------------------------------- batches
    def _on_device(self, name: str, device: torch.device, make: Callable[[], Tensor]) -> Tensor:
        """``make()`` on ``device``, moved there once and kept until :meth:`_forget` drops it."""
        key = (name, str(device))
        if key not in self._device:
            self._device[key] = make().to(device, non_blocking=True)
        return self._device[key]

    def _forget(self, name: str) -> None:
        self._device = {k: v for k, v in self._device.items() if k[0] != name}

    def resident(self, source: str, device: torch.device) -> Tensor:
        """The whole split's tensor (all 13 channels) on ``device``, moved once and reused across folds."""
        if not self.device_resident or device.type == "cpu":
            return self._host_tensor(source)
        return self._on_device(source, device, lambda: self._host_tensor(source))

    def gather(self, source: str, index: np.ndarray | Tensor | None = None,
               device: torch.device | str = "cpu") -> Tensor:
        """Rows ``index`` (all by default) of a split, in the configured band set's channels, on ``device``."""
        device = torch.device(device)
        images = self.resident(source, device)
        if index is not None:
            images = images[torch.as_tensor(index, device=images.device)]
        if self._picks is not None:
            images = images.index_select(1, self._on_device("picks", images.device, lambda: self._picks))
        return images.to(device)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int = 0) -> Any:
        if not isinstance(batch, dict) or "source" not in batch:
            return batch
        source, index = batch["source"], batch["index"]
        device = index.device
        x = self.gather(source, index, device)
        out: dict[str, Tensor] = {"index": index}
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training:
            x = self.augment(x)
        out["x"] = x
        if source == "train":
            out["keep"] = self._on_device("keep_train", device, lambda: torch.from_numpy(self.keep["train"]))[index]
            out["y"] = self.resident("labels", device)[index]
        else:
            out["keep"] = torch.ones(len(index), dtype=torch.bool, device=device)
        return out

    def sample(self, i: int, split: str = "train") -> tuple[np.ndarray, int | None]:
        """One sample (channels of the configured band set, physical units) and its label."""
        image = self.gather(split, [i])[0].numpy()
        label = int(self.labels[i]) if split == "train" else None
        return image, label

    def plot(self, i: int, split: str = "train", prediction: float | None = None,
             path: str | Path | None = None):
        """Plot sample ``i`` of a split as a band grid (see :func:`plot_sample`)."""
        image, label = self.sample(i, split)
        ids = self.train_ids if split == "train" else self.test_ids
        return plot_sample(image, self.channels, label, prediction, title=ids[i], path=path)
