import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold

from landslide.data.preprocess import to_channels
from landslide.data.synthetic import generate_batch
from landslide.features import compute_features
from landslide.filter.negative import KeepAll, NegativeFilter, filter_report, load_filter


@pytest.fixture(scope="module")
def generated():
    raw, labels, _ = generate_batch(11, 900)
    return compute_features(to_channels(raw)), labels


def test_held_out_recall_and_removal(generated):
    feats, y = generated
    tr, va = next(StratifiedKFold(4, shuffle=True, random_state=0).split(feats, y))
    filt = NegativeFilter({"n_estimators": 100}, calibration_folds=4).fit(feats[tr], y[tr], index=tr)
    report = filter_report(filt.keep(feats[va]), y[va])
    assert report["positives_lost"] <= max(1, round(0.01 * y[va].sum()))
    assert report["negatives_filtered"] > 0.3
    assert report["positive_share_after"] > report["positive_share_before"]
    assert filt.calibration["oof_positives_lost"] == 0  # by construction of the threshold


def test_save_and_load_give_identical_scores(generated, tmp_path):
    feats, y = generated
    filt = NegativeFilter({"n_estimators": 30}, calibration_folds=3).fit(feats[:600], y[:600], np.arange(600))
    filt.save(tmp_path)
    assert (tmp_path / "filter.ubj").is_file()
    again = load_filter(tmp_path)
    assert isinstance(again, NegativeFilter) and again.threshold == filt.threshold
    assert np.array_equal(again.scores(feats[600:]), filt.scores(feats[600:]))
    assert np.array_equal(again.fitted_on, np.arange(600))


def test_keep_all_keeps_every_image(generated, tmp_path):
    feats, y = generated
    filt = KeepAll().fit(feats, y)
    assert filt.keep(feats).all()
    filt.save(tmp_path)
    assert isinstance(load_filter(tmp_path), KeepAll)


def test_bad_settings(generated):
    feats, _ = generated
    with pytest.raises(ValueError, match="safety_margin"):
        NegativeFilter(safety_margin=-0.5)
    with pytest.raises(ValueError, match="positives"):
        NegativeFilter(calibration_folds=5).fit(feats[:20], np.r_[np.ones(2), np.zeros(18)].astype(int))
