import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold

from landslide.data.preprocess import to_channels
from landslide.features import compute_features
from landslide.filter.negative import (
    KeepAll,
    NegativeFilter,
    estimate_wrong_positive_rate,
    filter_report,
    load_filter,
    positive_threshold,
    positives_below,
)
from landslide.synth.easy import generate_batch

# the trees these tests were tuned with (the reference's depth; configs/filter/xgboost.yaml keeps shallower ones)
TREES = {"max_depth": 5, "min_child_weight": 10, "tree_method": "hist", "n_jobs": 2}


def negative_filter(n_estimators: int = 200, calibration_folds: int = 5, safety_margin: float = 0.5,
                    max_positive_loss: float = 0.0, wrong_positive_rate: float | str = 0.0,
                    noise_quantile: float = 0.4, max_noise_share: float = 0.25) -> NegativeFilter:
    return NegativeFilter({**TREES, "n_estimators": n_estimators}, calibration_folds=calibration_folds,
                          safety_margin=safety_margin, seed=0, max_positive_loss=max_positive_loss,
                          wrong_positive_rate=wrong_positive_rate, noise_quantile=noise_quantile,
                          max_noise_share=max_noise_share)


@pytest.fixture(scope="module")
def generated():
    raw, labels, _ = generate_batch(11, 900)
    return compute_features(to_channels(raw)), labels


def test_held_out_recall_and_removal(generated):
    feats, y = generated
    tr, va = next(StratifiedKFold(4, shuffle=True, random_state=0).split(feats, y))
    filt = negative_filter(100, calibration_folds=4).fit(feats[tr], y[tr], index=tr)
    report = filter_report(filt.keep(feats[va]), y[va])
    assert report["positives_lost"] <= max(1, round(0.01 * y[va].sum()))
    assert report["negatives_filtered"] > 0.3
    assert report["positive_share_after"] > report["positive_share_before"]
    assert filt.calibration["oof_positives_lost"] == 0  # by construction of the threshold


def test_save_and_load_give_identical_scores(generated, tmp_path):
    feats, y = generated
    filt = negative_filter(30, calibration_folds=3).fit(feats[:600], y[:600], np.arange(600))
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
        negative_filter(safety_margin=-0.5)
    with pytest.raises(ValueError, match="positives"):
        negative_filter(calibration_folds=5).fit(feats[:20], np.r_[np.ones(2), np.zeros(18)].astype(int))


def test_threshold_rule_zero_share_is_the_lowest_positive():
    scores = np.array([0.02, 0.3, 0.5, 0.9])
    lowest = positive_threshold(scores, 0.0, 0.0)
    assert lowest == pytest.approx(0.02)
    assert positive_threshold(scores, 0.25, 0.0) == pytest.approx(0.3)  # one of four may fall below
    assert positive_threshold(scores, 0.0, 0.5) < lowest  # the margin lies below, in log-odds


@pytest.mark.slow  # the fixed-share rule (max_positive_loss), no longer the default
def test_positive_loss_share_survives_planted_wrong_labels(generated):
    feats, y = generated
    tr, va = next(StratifiedKFold(4, shuffle=True, random_state=0).split(feats, y))
    noisy = y[tr].copy()
    # wrong labels on the most obvious negatives: they would drag a zero-loss threshold down to nothing
    scores = negative_filter(50, calibration_folds=3).fit(feats[tr], y[tr]).scores(feats[tr])
    planted = np.argsort(np.where(noisy == 0, scores, np.inf))[:3]
    noisy[planted] = 1
    strict = negative_filter(100, calibration_folds=4).fit(feats[tr], noisy)
    robust = negative_filter(100, calibration_folds=4, max_positive_loss=0.05).fit(feats[tr], noisy)
    strict_report = filter_report(strict.keep(feats[va]), y[va])
    robust_report = filter_report(robust.keep(feats[va]), y[va])
    assert robust_report["negatives_filtered"] > strict_report["negatives_filtered"] + 0.2
    assert robust_report["positives_lost"] <= max(1, round(0.02 * y[va].sum()))
    assert robust.calibration["max_positive_loss"] == 0.05
    assert robust.calibration["oof_positives_lost_share"] <= 0.05


def test_positive_loss_share_is_saved(generated, tmp_path):
    feats, y = generated
    negative_filter(20, calibration_folds=3, max_positive_loss=0.01).fit(feats, y).save(tmp_path)
    assert load_filter(tmp_path).max_positive_loss == 0.01
    with pytest.raises(ValueError, match="max_positive_loss"):
        negative_filter(max_positive_loss=0.7)


def test_one_mislabelled_negative_with_a_low_score_no_longer_zeroes_the_threshold():
    rng = np.random.default_rng(0)
    negatives = rng.beta(1, 30, 900)  # obvious negatives score near 0
    positives = np.r_[rng.uniform(0.3, 0.99, 99), 0.004]  # one negative labelled positive, scored like the others
    scores = np.r_[negatives, positives]
    labels = np.r_[np.zeros(900), np.ones(100)].astype(int)
    trusting = positive_threshold(positives, 0.0, 0.5)
    assert trusting < 0.004 and (negatives < trusting).mean() < 0.4  # the old rule: pinned by the wrong label
    rate = estimate_wrong_positive_rate(scores, labels, 0.5)
    assert rate == pytest.approx(1 / 450)  # one positive among the 450 negatives under their median
    robust = positive_threshold(positives, 0.0, 0.5, negatives, rate)
    lowest_real = positives[:99].min()
    assert positives_below(positives, 0.0, negatives, rate) == 1
    assert robust == pytest.approx(positive_threshold(positives[:99], 0.0, 0.5))  # as if the label were right
    assert robust < lowest_real and (negatives < robust).mean() > 0.99


def test_the_rule_for_wrong_labels_loses_no_more_positives_than_expected_wrong():
    negatives = np.linspace(0.0, 0.5, 1000)
    # three positives scoring like negatives, 50 above every negative
    positives = np.r_[0.1, 0.3, 0.45, np.linspace(0.6, 0.9, 50)]
    # about 4 wrong labels expected (0.004 x 1,000): the three pass, and no positive above every negative does
    assert positives_below(positives, 0.0, negatives, 0.004) == 3
    # 2 expected: 1.2 under 0.3, where 1 lies, but 1.8 under 0.45, where 2 lie: only the lowest passes
    assert positives_below(positives, 0.0, negatives, 0.002) == 1
    assert positives_below(positives, 0.0, negatives, 0.0) == 0  # clean labels: the lowest positive sets it
    assert positives_below(positives, 0.04, negatives, 0.0) == 2  # a fixed share: floor(0.04 x 53)
    assert positives_below(positives, 0.04, negatives, 0.002) == 3  # the share on top of the expected wrong ones
    no_positives_low = np.r_[np.full(5, 0.7), 0.8]
    assert estimate_wrong_positive_rate(np.r_[negatives, no_positives_low], np.r_[np.zeros(1000), np.ones(6)],
                                        0.5) == 0.0


def test_estimated_rule_on_clean_labels_is_the_lowest_positive_rule(generated):
    feats, y = generated
    tr, _ = next(StratifiedKFold(4, shuffle=True, random_state=0).split(feats, y))
    trusting = negative_filter(60, calibration_folds=3).fit(feats[tr], y[tr])
    estimating = negative_filter(60, calibration_folds=3, wrong_positive_rate="estimate").fit(feats[tr], y[tr])
    assert estimating.calibration["wrong_positive_rate"] == 0.0  # no positive scores among the lower negatives
    assert estimating.threshold == trusting.threshold


def planted_wrong_positives(labels: np.ndarray, share: float = 0.03, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` with ``share`` of the negatives, of every kind and chosen at random, labelled positive; and
    which."""
    noisy = labels.copy()
    negatives = np.flatnonzero(noisy == 0)
    planted = np.random.default_rng(seed).choice(negatives, round(share * len(negatives)), replace=False)
    noisy[planted] = 1
    return noisy, planted


def test_estimated_rule_survives_planted_wrong_labels(generated):
    feats, y = generated
    tr, va = next(StratifiedKFold(4, shuffle=True, random_state=0).split(feats, y))
    noisy, planted = planted_wrong_positives(y[tr])
    trusting = negative_filter(100, calibration_folds=4).fit(feats[tr], noisy)
    robust = negative_filter(100, calibration_folds=4, wrong_positive_rate="estimate").fit(feats[tr], noisy)
    strict_report = filter_report(trusting.keep(feats[va]), y[va])
    robust_report = filter_report(robust.keep(feats[va]), y[va])
    assert robust_report["negatives_filtered"] > strict_report["negatives_filtered"] + 0.2
    assert robust_report["positives_lost"] <= max(1, round(0.01 * y[va].sum()))
    true_share = len(planted) / noisy.sum()
    assert 0.3 * true_share < robust.calibration["estimated_noise_share"] < 2 * true_share


def test_an_estimate_calling_too_many_labels_wrong_is_not_believed(generated):
    feats, y = generated
    tr, _ = next(StratifiedKFold(4, shuffle=True, random_state=0).split(feats, y))
    noisy, _ = planted_wrong_positives(y[tr])
    believing = negative_filter(60, calibration_folds=3, wrong_positive_rate="estimate", max_noise_share=1.0)
    doubting = negative_filter(60, calibration_folds=3, wrong_positive_rate="estimate", max_noise_share=0.0)
    trusting = negative_filter(60, calibration_folds=3)
    believing.fit(feats[tr], noisy), doubting.fit(feats[tr], noisy), trusting.fit(feats[tr], noisy)
    assert believing.calibration["noise_estimate_used"] and believing.threshold > trusting.threshold
    assert not doubting.calibration["noise_estimate_used"] and doubting.threshold == trusting.threshold
    assert doubting.calibration["estimated_noise_share"] == believing.calibration["estimated_noise_share"] > 0
