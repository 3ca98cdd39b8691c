import numpy as np
import pytest
import torch

from conftest import data_settings
from landslide.data.augment import BatchAugment, dihedral_view, tta_views
from landslide.data.batches import IndexBatches
from landslide.data.datamodule import LandslideDataModule


@pytest.fixture()
def dm(tiny_release, tmp_path):
    module = LandslideDataModule(tiny_release, tmp_path / "cache", **data_settings(num_folds=3, batch_size=16,
                                                                                  progress=False))
    module.prepare_data()
    module.setup()
    return module


def test_folds_are_stratified_disjoint_and_covering(dm):
    y = dm.labels
    folds = dm.folds()
    vals = np.concatenate([va for _, va in folds])
    assert sorted(vals.tolist()) == list(range(len(y)))
    for tr, va in folds:
        assert not set(tr) & set(va)
        assert abs(y[va].mean() - y.mean()) < 0.06
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, dm.folds()))  # fixed by split_seed


def test_set_fold_with_a_filter_mask_and_stats(dm):
    tr, va = dm.folds()[1]
    keep = np.arange(len(tr)) % 2 == 0
    dm.set_fold(1, train_keep=keep, val_keep=np.zeros(len(va), bool))
    assert np.array_equal(dm.train_index, tr[keep]) and np.array_equal(dm.val_index, va)
    expected = dm.gather("train", np.sort(tr[keep]))[:, 1].double().mean()
    assert dm.norm_mean[1] == pytest.approx(float(expected), rel=1e-4)
    batch = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())))
    assert batch["x"].shape[1:] == (13, 64, 64) and not batch["keep"].any()


def test_train_batches_cover_the_fold_and_reshuffle(dm):
    loader = dm.train_dataloader()
    first = torch.cat([b["index"] for b in loader])
    second = torch.cat([b["index"] for b in loader])
    assert len(first) == len(loader) * 16
    assert set(first.tolist()) <= set(dm.train_index.tolist())
    assert not torch.equal(first, second)


def test_shuffled_batches_have_one_size_and_lose_no_image():
    indices = np.arange(100, 2100)  # 2,000 images in batches of 768: 3 a epoch, nothing dropped for a short one
    stream = IndexBatches("train", indices, 768, shuffle=True, seed=3)
    epochs = [torch.stack([b["index"] for b in stream]) for _ in range(8)]
    assert all(e.shape == (3, 768) for e in epochs) and len(stream) == 3
    seen = torch.cat([e.flatten() for e in epochs])
    counts = torch.bincount(seen - 100, minlength=2000)
    assert seen.min() >= 100 and seen.max() < 2100
    assert counts.max() - counts.min() <= 1  # over 8 epochs every image is seen as often, up to one
    assert not all(torch.equal(epochs[0], e) for e in epochs[1:])

    again = IndexBatches("train", indices, 768, shuffle=True, seed=3)
    again.epoch = 5  # a resumed run continues the same stream
    assert torch.equal(torch.stack([b["index"] for b in again]), epochs[5])


def test_small_folds_and_evaluation_batches():
    small = IndexBatches("train", np.arange(10), 32, shuffle=True)
    (batch,) = list(small)
    assert sorted(batch["index"].tolist()) == list(range(10))
    ordered = [b["index"].tolist() for b in IndexBatches("train", np.arange(10), 4, shuffle=False)]
    assert ordered == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_augmentation_leaves_the_source_unchanged():
    x = torch.randn(32, 13, 64, 64)
    before = x.clone()
    aug = BatchAugment(**{**data_settings()["augment"], "erase_p": 1.0})
    aug.set_fill(torch.full((13,), 7.0))
    out = aug(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, before)
    assert not torch.equal(out, x)
    assert (out == 7.0).any()  # erased patches take the fill value


def test_tta_views_are_the_dihedral_group():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    views = tta_views(x)
    assert views.shape == (8, 1, 1, 4, 4)
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    assert torch.equal(dihedral_view(x, 3), torch.rot90(x, 2, (-2, -1)))


def test_plot_writes_a_png(dm, tmp_path):
    from landslide.plots.samples import plot_split_sample

    path = tmp_path / "sample.png"
    figure = plot_split_sample(dm.gather, dm.channels, 0, labels=dm.labels, ids=dm.train_ids, prediction=0.7,
                               path=path)
    assert path.stat().st_size > 10_000
    assert figure._suptitle.get_text() == f"{dm.train_ids[0]}   label: {int(dm.labels[0])}   prediction: 0.70"


def test_plot_takes_any_gather_callable_and_the_band_set():
    from landslide.bands import band_set
    from landslide.plots.samples import plot_split_sample, split_sample

    channels = band_set("sar")
    calls = []

    def gather(split, rows):
        calls.append((split, list(rows)))
        return torch.randn(len(rows), len(channels), 64, 64)

    image, label = split_sample(gather, 3, "test")
    assert image.shape == (8, 64, 64) and image.dtype == np.float32 and label is None
    figure = plot_split_sample(gather, channels, 5, "test", ids=[f"S{i}" for i in range(6)])
    assert calls == [("test", [3]), ("test", [5])]
    titles = {ax.get_title() for ax in figure.axes if ax.get_title()}
    assert len(titles) == 12 and "RGB" not in titles and "desc VV diff" in titles  # 2 passes x 2 pols x 3
    assert figure._suptitle.get_text() == "S5"


def test_folds_and_holdout_are_computed_once(tiny_release, tmp_path, monkeypatch):
    import landslide.data.datamodule as datamodule

    calls = {"kfold": 0, "holdout": 0}
    kfold_split, holdout_split = datamodule.StratifiedKFold.split, datamodule.StratifiedShuffleSplit.split

    def counted(key, split):
        def wrapper(self, *args, **kwargs):
            calls[key] += 1
            return split(self, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(datamodule.StratifiedKFold, "split", counted("kfold", kfold_split))
    monkeypatch.setattr(datamodule.StratifiedShuffleSplit, "split", counted("holdout", holdout_split))
    module = LandslideDataModule(tiny_release, tmp_path / "cache",
                                 **data_settings(num_folds=3, holdout_fraction=0.2, progress=False))
    module.prepare_data()
    module.setup()  # selects fold 0
    for fold in (1, 2, 0):
        module.set_fold(fold)
    folds = module.folds()
    assert module.folds() is folds and module.holdout_index is module.holdout_index
    assert calls == {"kfold": 1, "holdout": 1}
    held = set(module.holdout_index.tolist())
    assert len(held) == 24 and not held & set(np.concatenate([va for _, va in folds]).tolist())


def test_the_filter_keep_mask_follows_the_fold(dm):
    _, va = dm.folds()[0]
    dm.set_fold(0, val_keep=np.zeros(len(va), bool))
    assert not dm.filter_keep[va].any() and dm.filter_keep.sum() == len(dm.labels) - len(va)
    batch = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())))
    assert not batch["keep"].any()
    dm.set_fold(0)  # the mask kept beside the split's tensors is replaced, not reused
    batch = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())))
    assert dm.filter_keep.all() and batch["keep"].all()


def test_bad_configuration_is_rejected(tiny_release, tmp_path):
    with pytest.raises(ValueError, match="data.stats"):
        LandslideDataModule(tiny_release, tmp_path, **data_settings(stats="imagenet"))
    with pytest.raises(ValueError, match="data.fold"):
        LandslideDataModule(tiny_release, tmp_path, **data_settings(num_folds=3, fold=3))


def test_band_sets_are_gathered_from_the_cached_channels(tiny_release, tmp_path):
    from landslide.bands import band_set, channel_indices

    sar = LandslideDataModule(tiny_release, tmp_path / "cache", **data_settings(bands="sar", num_folds=3,
                                                                               progress=False))
    sar.prepare_data()
    sar.setup()
    full = torch.from_numpy(np.array(sar.split("train").images[[4, 7]]))
    x = sar.gather("train", [4, 7])
    assert x.shape == (2, 8, 64, 64)
    assert torch.equal(x, full[:, channel_indices(band_set("sar"))])
    batch = sar.on_after_batch_transfer(next(iter(sar.val_dataloader())))
    assert batch["x"].shape[1] == 8
    assert len(sar.norm_mean) == 8
