import numpy as np
import torch

from landslide.bands import CHANNEL_NAMES, channel_index
from landslide.features import FEATURE_NAMES, MAP_NAMES, compute_features, index_maps


def test_feature_count_and_names():
    assert len(MAP_NAMES) == 25 and len(FEATURE_NAMES) == 150 and len(set(FEATURE_NAMES)) == 150
    assert FEATURE_NAMES[0] == "cloud_mask_mean" and "ndvi_q90" in FEATURE_NAMES and "evi_min" in FEATURE_NAMES


def test_indices_on_a_hand_computed_pixel():
    red, green, blue, nir = (torch.tensor([v]) for v in (0.1, 0.2, 0.05, 0.5))
    idx = index_maps(red, green, blue, nir)
    assert torch.isclose(idx["ndvi"], torch.tensor([0.4 / 0.6]))
    assert torch.isclose(idx["savi"], torch.tensor([1.5 * 0.4 / 1.1]))
    assert torch.isclose(idx["gndvi"], torch.tensor([0.3 / 0.7]))
    assert torch.isclose(idx["evi"], torch.tensor([2.5 * 0.4 / (0.5 + 0.6 - 0.375 + 1)]))
    assert torch.isclose(idx["ndwi"], torch.tensor([-0.3 / 0.7]))
    assert torch.isclose(idx["ngrdi"], torch.tensor([0.1 / 0.3]))


def _patch(optical: float) -> np.ndarray:
    img = np.full((13, 64, 64), -12.0, np.float32)
    img[0] = 0
    for name in ("red", "green", "blue", "nir"):
        img[channel_index(name)] = optical
    return img


def test_black_and_saturated_patches_do_not_blow_up():
    feats = compute_features(np.stack([_patch(0.0), _patch(10000.0), _patch(65535.0)]))
    assert np.isfinite(feats).all()
    ndvi = FEATURE_NAMES.index("ndvi_mean")
    assert feats[0, ndvi] == 0.0  # 0/0 guarded
    assert np.abs(feats[:, [FEATURE_NAMES.index(f"{i}_max") for i in ("ndvi", "evi", "savi")]]).max() <= 2.5


def test_statistics_match_numpy_per_image():
    rng = np.random.default_rng(0)
    images = rng.normal(1000, 300, size=(5, 13, 64, 64)).astype(np.float32)
    feats = compute_features(images, batch_size=2)
    nir = images[:, CHANNEL_NAMES.index("nir")].reshape(5, -1)
    col = FEATURE_NAMES.index
    assert np.allclose(feats[:, col("nir_mean")], nir.mean(1), rtol=1e-5)
    assert np.allclose(feats[:, col("nir_std")], nir.std(1), rtol=1e-4)
    assert np.allclose(feats[:, col("nir_max")], nir.max(1))
    assert np.allclose(feats[:, col("nir_q10")], np.quantile(nir, 0.1, axis=1), rtol=1e-3)
    assert np.allclose(feats[:, col("nir_q90")], np.quantile(nir, 0.9, axis=1), rtol=1e-3)
