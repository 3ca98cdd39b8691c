"""LandslideDataModule: the cached release as device-resident tensors, stratified folds, batch augmentation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from filelock import FileLock
from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit
from torch import Tensor
from torch.utils.data import DataLoader

from landslide.bands import CHANNEL_NAMES, band_set, bigearthnet_stats, channel_indices
from landslide.data.augment import BatchAugment
from landslide.data.batches import IndexBatches
from landslide.data.cache import CachedSplit, load_or_build_split
from landslide.data.exclude import Exclusion, read_exclusion
from landslide.data.masks import read_masks
from landslide.data.preprocess import channel_stats, resident_channel_stats
from landslide.data.release import ReleaseError, SplitIndex, read_release_index
from landslide.errors import ConfigError
from landslide.synth.embedded import ensure_embedded_release
from landslide.timing import phase

log = logging.getLogger(__name__)

# keys of the host and device caches (``_host``, ``_device``) besides the split names
LABELS = "labels"  # the training split's labels, float
FILTER_KEEP = "filter_keep"  # LandslideDataModule.filter_keep
PICKS = "picks"  # the band set's channel indices
MASKS = "masks"  # the training split's slide masks (data.masks), uint8 (n, 64, 64)
HAS_MASK = "has_mask"  # which training images have a mask
PREPARE_LOCK = ".prepare.lock"  # in cache_dir: jobs started together take turns at generating and caching


class LandslideDataModule(L.LightningDataModule):
    """Reads (or generates) a release, caches it, and serves folds of it as device-resident tensors.

    Batches are dicts: ``x`` (n, c, 64, 64) in physical units, ``y`` (float labels, when known), ``keep`` (False
    where the negative filter removed the image), ``index`` (row in the split), and with ``masks`` (the release's
    ``train_masks/``, :mod:`landslide.data.masks`) ``mask`` (n, 64, 64) and ``has_mask`` for training-split
    batches, augmented with their images. Normalisation is the model's job, with statistics this module fits on the
    fold's training part (see :meth:`set_fold`).
    """

    def __init__(
        self,
        root: str | Path,
        cache_dir: str | Path,
        *,
        bands: str,
        num_folds: int,
        fold: int | None,
        split_seed: int,
        fold_seed_stride: int,
        holdout_fraction: float,
        exclude: str | Path | None,
        batch_size: int,
        eval_batch_size: int,
        stats: str,
        cloud_threshold: float,
        nan_policy: str,
        read_workers: int,
        augment: dict,
        device_resident: bool,
        stats_on_device: bool,
        progress: bool,
        synthetic: dict | None = None,
        masks: bool,
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
        self.exclude_file = Path(exclude) if exclude not in (None, "") else None
        self._exclusion: Exclusion | None = None
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.stats = stats
        self.cloud_threshold = cloud_threshold
        self.nan_policy = nan_policy
        self.read_workers = read_workers
        self.synthetic = dict(synthetic or {})
        self.masks = bool(masks)
        self.augment = BatchAugment(**(augment or {}))
        self.device_resident = device_resident
        self.stats_on_device = stats_on_device
        # the device training will use (:meth:`place`); statistics are computed there when ``stats_on_device``
        self.device = torch.device("cpu")
        self.progress = progress
        self._indices: dict[str, SplitIndex] = {}
        self._splits: dict[str, CachedSplit] = {}
        self._host: dict[str, Tensor] = {}
        self._device: dict[tuple[str, str], Tensor] = {}
        self._picks: Tensor | None = None
        self.train_index = np.zeros(0, np.int64)
        self.val_index = np.zeros(0, np.int64)
        # over every row of the training split: False where the current fold's filter removed a validation image
        # (batches carry it as ``keep``; the network's prediction there counts as negative)
        self.filter_keep = np.zeros(0, bool)
        self._folds: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._holdout: np.ndarray | None = None
        self._stats: tuple[list[float], list[float]] | None = None  # of train_index; None: not computed yet
        self.epoch_seed = split_seed

    # ---------------------------------------------------------------- data on disk
    def prepare_data(self) -> None:
        """Generate the embedded synthetic release if it is the configured root and absent
        (:func:`~landslide.synth.embedded.ensure_embedded_release`); build the cache. Jobs started together (a
        multirun) take turns through a lock file in the cache folder: the first one makes the data, the others
        find it."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        lock = self.cache_dir / PREPARE_LOCK
        ensure_embedded_release(self.root, self.synthetic, lock)
        if not (self.root / "Train.csv").is_file():
            raise ReleaseError(
                f"{self.root / 'Train.csv'}: file not found; data.root must be a release folder with "
                "Train.csv, Test.csv, train_data/ and test_data/"
            )
        with FileLock(lock):
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
        if LABELS in self._host:
            return
        train = self.split("train")
        self._host[LABELS] = torch.from_numpy(train.labels.astype(np.float32))
        if self.masks:
            masks, has = read_masks(self.root, train.ids)
            self._host[MASKS], self._host[HAS_MASK] = torch.from_numpy(masks), torch.from_numpy(has)
        picks = channel_indices(self.channels)
        # the band set's channels, or None when it is all of them in order (no selection needed)
        self._picks = None if picks == list(range(len(CHANNEL_NAMES))) else torch.tensor(picks, dtype=torch.long)
        self.filter_keep = np.ones(len(train.ids), bool)
        self.set_fold(self.fold if self.fold is not None else 0)

    # ---------------------------------------------------------------- folds
    @property
    def labels(self) -> np.ndarray:
        return self.split("train").labels

    @property
    def labels_tensor(self) -> Tensor:
        return self._host[LABELS]

    @property
    def train_ids(self) -> list[str]:
        return self.split("train").ids

    @property
    def test_ids(self) -> list[str]:
        return self.split("test").ids

    @property
    def exclusion(self) -> Exclusion | None:
        """The training images ``data.exclude`` lists (None without the option), read and checked once."""
        if self.exclude_file is not None and self._exclusion is None:
            self._exclusion = read_exclusion(self.exclude_file, self.train_ids)
            log.info("data.exclude: %d training image(s) listed in %s are left out of every fold",
                     len(self._exclusion.ids), self.exclude_file)
        return self._exclusion

    @property
    def excluded_index(self) -> np.ndarray:
        """Training rows ``data.exclude`` lists: in no fold and not held out."""
        return self.exclusion.rows if self.exclusion is not None else np.zeros(0, np.int64)

    @property
    def holdout_index(self) -> np.ndarray:
        """Training rows set aside from every fold (``holdout_fraction``; excluded rows never), stratified and fixed
        by ``split_seed``; computed once (labels, share and seed never change), the same array every time: do not
        modify it."""
        if self._holdout is None:
            y = self.labels
            rows = np.setdiff1d(np.arange(len(y)), self.excluded_index)
            if self.holdout_fraction == 0:
                self._holdout = np.zeros(0, np.int64)
            else:
                splitter = StratifiedShuffleSplit(1, test_size=self.holdout_fraction, random_state=self.split_seed)
                self._holdout = np.sort(rows[next(splitter.split(np.zeros(len(rows)), y[rows]))[1]])
        return self._holdout

    def folds(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Stratified (train, validation) index pairs of every fold, fixed by ``split_seed``; held-out rows
        (``holdout_fraction``) and excluded ones (``exclude``) are in none of them. Computed once, the same list every
        time: do not modify it."""
        if self._folds is None:
            y = self.labels
            rows = np.setdiff1d(np.arange(len(y)), np.union1d(self.holdout_index, self.excluded_index))
            positives = int((y[rows] > 0.5).sum())
            # what the excluded images leave is the list's fault: name it
            excluded = f" once data.exclude={self.exclude_file} is left out" if len(self.excluded_index) else ""
            if positives in (0, len(rows)):
                raise ReleaseError(f"{self.root / 'Train.csv'}: every label is {int(positives > 0)}{excluded} "
                                   f"({len(rows)} images to train on); training needs images of both classes")
            smallest = min(positives, len(rows) - positives)
            if smallest < self.num_folds:
                raise ConfigError(f"data.num_folds={self.num_folds}: every fold needs images of each class, and "
                                  f"the smaller class has {smallest}{excluded} (choose 2 to {smallest} folds)")
            splitter = StratifiedKFold(self.num_folds, shuffle=True, random_state=self.split_seed)
            self._folds = [(rows[tr], rows[va]) for tr, va in splitter.split(np.zeros(len(rows)), y[rows])]
        return self._folds

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
        self.filter_keep = keep
        self._forget(FILTER_KEEP)
        self._stats = None  # fitted on the fold's training images when first needed

    def place(self, device: torch.device | str) -> None:
        """The device training will use: with ``stats_on_device`` the statistics are computed there, on the split's
        resident copy (which training reuses), instead of on the host."""
        self.device = torch.device(device)

    @property
    def norm_mean(self) -> list[float]:
        """Per-channel means of the current fold's training images (fitted on first use after :meth:`set_fold`)."""
        return self._fitted_stats()[0]

    @property
    def norm_std(self) -> list[float]:
        return self._fitted_stats()[1]

    def _fitted_stats(self) -> tuple[list[float], list[float]]:
        if self._stats is None:
            with phase("statistics"):
                self._stats = self.fit_stats(self.train_index)
            self.augment.set_fill(torch.tensor(self._stats[0]))
        return self._stats

    def fit_stats(self, index: np.ndarray) -> tuple[list[float], list[float]]:
        """Per-channel mean and standard deviation of training rows ``index`` (float64 sums): with
        ``stats_on_device`` and a GPU as :attr:`device`, on the split's resident copy there; else in NumPy on the
        host (on a CPU the faster of the two)."""
        if self.stats == "bigearthnet":
            return bigearthnet_stats(self.channels)
        index = np.sort(index)
        if not self.stats_on_device or self.device.type == "cpu":
            return channel_stats(self.gather("train", index).numpy(), self.channels)
        return resident_channel_stats(lambda rows: self.gather("train", rows, self.device), index, self.channels)

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

    def labels_on(self, device: torch.device | str) -> Tensor:
        """The training split's labels (float) on ``device``, moved once and reused across folds."""
        return self.resident(LABELS, torch.device(device))

    def gather(self, source: str, index: np.ndarray | Tensor | None = None,
               device: torch.device | str = "cpu") -> Tensor:
        """Rows ``index`` (all by default) of a split, in the configured band set's channels, on ``device``."""
        device = torch.device(device)
        images = self.resident(source, device)
        if index is not None:
            images = images[torch.as_tensor(index, device=images.device)]
        if self._picks is not None:
            images = images.index_select(1, self._on_device(PICKS, images.device, lambda: self._picks))
        return images.to(device)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int = 0) -> Any:
        if not isinstance(batch, dict) or "source" not in batch:
            return batch
        source, index = batch["source"], batch["index"]
        device = index.device
        x = self.gather(source, index, device)
        out: dict[str, Tensor] = {"index": index}
        trainer = getattr(self, "trainer", None)
        masks = self.resident(MASKS, device)[index] if self.masks and source == "train" else None
        if trainer is not None and trainer.training:
            self._fitted_stats()  # the erasing fill is the fold's training means
            if masks is None:
                x = self.augment(x)
            else:
                x, masks = self.augment(x, masks=masks)
        out["x"] = x
        if masks is not None:
            out["mask"], out["has_mask"] = masks, self.resident(HAS_MASK, device)[index]
        if source == "train":
            out["keep"] = self._on_device(FILTER_KEEP, device, lambda: torch.from_numpy(self.filter_keep))[index]
            out["y"] = self.labels_on(device)[index]
        else:
            out["keep"] = torch.ones(len(index), dtype=torch.bool, device=device)
        return out
