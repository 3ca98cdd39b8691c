import numpy as np

from conftest import write_release
from landslide.bands import CHANNEL_NAMES, channel_index, raw_index
from landslide.data.cache import load_or_build
from landslide.data.preprocess import channel_stats, cloud_mask, to_channels


def test_pre_event_bands_are_post_minus_diff():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(3, 64, 64, 12)).astype(np.float32)
    ch = to_channels(raw)
    assert ch.shape == (3, 13, 64, 64) and ch.dtype == np.float32
    for orbit in ("desc", "asc"):
        for pol in ("vv", "vh"):
            post = raw[..., raw_index(f"{orbit}_{pol}")]
            diff = raw[..., raw_index(f"{orbit}_diff_{pol}")]
            assert np.allclose(ch[:, channel_index(f"{orbit}_{pol}_pre")], post - diff)
            assert np.allclose(ch[:, channel_index(f"{orbit}_{pol}_post")], post)
    assert np.allclose(ch[:, channel_index("nir")], raw[..., raw_index("nir")])


def test_cloud_mask_on_a_known_cloudy_patch():
    raw = np.full((1, 64, 64, 12), 800.0, np.float32)
    raw[0, 10:20, 30:50, :3] = 7000.0  # a bright cloud over 10 x 20 pixels
    mask = cloud_mask(raw, threshold=3500.0)
    assert mask.sum() == 200 and mask[0, 15, 40] == 1 and mask[0, 0, 0] == 0
    assert to_channels(raw)[0, 0].sum() == 200


def test_channel_stats_match_numpy():
    rng = np.random.default_rng(1)
    images = rng.normal(5, 3, size=(40, 13, 8, 8)).astype(np.float32)
    means, stds = channel_stats(images, CHANNEL_NAMES, chunk=7)
    assert (means[0], stds[0]) == (0.0, 1.0)
    assert np.allclose(means[1:], images[:, 1:].mean(axis=(0, 2, 3)), atol=1e-4)
    assert np.allclose(stds[1:], images[:, 1:].std(axis=(0, 2, 3)), atol=1e-4)


def test_cache_is_reused_and_keyed_by_config(tmp_path):
    write_release(tmp_path / "rel")
    first = load_or_build(tmp_path / "rel", tmp_path / "cache", 3500.0, progress=False)
    again = load_or_build(tmp_path / "rel", tmp_path / "cache", 3500.0, progress=False)
    assert again.train.folder == first.train.folder and again.test.folder == first.test.folder
    assert isinstance(again.train.images, np.memmap)
    other = load_or_build(tmp_path / "rel", tmp_path / "cache", 2000.0, progress=False)
    assert other.train.folder != first.train.folder
    np.save(tmp_path / "rel" / "train_data" / "T000.npy", np.ones((64, 64, 12)))
    changed = load_or_build(tmp_path / "rel", tmp_path / "cache", 3500.0, progress=False)
    assert changed.train.folder != first.train.folder and changed.test.folder == first.test.folder
    assert np.allclose(changed.train.images[0, 1], 1.0)
