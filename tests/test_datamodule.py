import numpy as np
import pytest
import torch

from conftest import data_settings
from landslide.data.augment import BatchAugment, dihedral_view, tta_views
from landslide.data.datamodule import IndexBatches, LandslideDataModule


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
    path = tmp_path / "sample.png"
    dm.plot(0, prediction=0.7, path=path)
    assert path.stat().st_size > 10_000


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
