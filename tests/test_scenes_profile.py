"""The ``scenes`` difficulty: windows cut from generated scenes, labelled by the slide pixels they hold."""

import numpy as np
import pytest
import xgboost as xgb
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from landslide.synth import scenes
from landslide.synth.release import generate_release, truth_dir


def test_windows_of_scenes_a_fifth_positive_and_deterministic():
    x, y, kinds = scenes.generate_batch(5, 2 * scenes.PER_LANDSCAPE)  # two landscapes
    assert x.shape == (2 * scenes.PER_LANDSCAPE, 64, 64, 12) and np.isfinite(x).all()
    assert 0.1 <= y.mean() <= 0.4
    assert ((kinds == 0) == (y == 1)).all() and set(np.unique(kinds)) <= {0, 1, 2}
    again, y2, _ = scenes.generate_batch(5, scenes.PER_LANDSCAPE)  # the same seed's first landscape
    np.testing.assert_array_equal(x[: len(again)], again)
    np.testing.assert_array_equal(y[: len(again)], y2)
    other, _, _ = scenes.generate_batch(6, scenes.PER_LANDSCAPE)
    assert not np.allclose(again, other)


def test_release_of_scene_windows(tmp_path):
    summary = generate_release(tmp_path / "scenes", 64, 16, seed=2, workers=1, difficulty="scenes")
    assert summary["train"]["n"] == 64 and summary["train"]["positives"] > 0
    assert set(summary["train"]["kinds"]) == set(scenes.KINDS)
    assert (truth_dir(tmp_path / "scenes") / "test_labels.csv").is_file()


def _statistics_auc(without_slides: bool) -> tuple[float, float]:
    """Share of positives, and the out-of-fold AUC of XGBoost on 6 statistics of each band of 400 windows."""
    rng = np.random.default_rng(5)
    parts = [scenes.cut_windows(rng, scenes.PER_LANDSCAPE, without_slides) for _ in range(10)]
    x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    f = x.reshape(len(x), -1, 12)
    q10, q90 = np.quantile(f, [0.1, 0.9], axis=1)
    stats = np.concatenate([f.mean(1), f.std(1), f.min(1), f.max(1), q10, q90], 1)
    model = xgb.XGBClassifier(n_estimators=200, max_depth=4, learning_rate=0.05, n_jobs=2, random_state=0)
    prob = cross_val_predict(model, stats, y, cv=StratifiedKFold(3, shuffle=True, random_state=0),
                             method="predict_proba")[:, 1]
    return float(y.mean()), float(roc_auc_score(y, prob))


@pytest.mark.slow
def test_only_the_slide_tells_a_positive_window_from_a_negative():
    """Band statistics separate the windows with their slides, and not the same windows drawn without them."""
    share, with_slides = _statistics_auc(False)
    same_share, without = _statistics_auc(True)
    assert 0.15 < share == same_share < 0.35
    # without signal, out-of-fold AUC scatters around 0.5 and below it (cross-validation's known bias): 0.39 seen
    assert with_slides > 0.65 and without < 0.6, (with_slides, without)
