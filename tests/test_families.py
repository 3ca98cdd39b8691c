"""The accuracy benchmark's data families: the release layout, the positive share, wrong training labels only, clean
truths beside the release, and the evidence where each family puts it."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from landslide.bands import raw_index
from landslide.data.release import read_release_index
from landslide.synth.families import FAMILY_NAMES, KINDS, family_batch
from landslide.synth.release import generate_release, main, truth_dir

N_TRAIN, N_TEST = 150, 30


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def family(request, tmp_path_factory) -> tuple[str, dict, object]:
    root = tmp_path_factory.mktemp(request.param) / "release"
    summary = generate_release(root, N_TRAIN, N_TEST, seed=4, workers=1, difficulty=request.param, label_noise=0.02)
    return request.param, summary, root


def test_a_family_is_a_release_with_clean_truths_beside_it(family):
    name, summary, root = family
    train_index, test_index = read_release_index(root)  # the project's reader validates the layout
    assert len(train_index.ids) == N_TRAIN and len(test_index.ids) == N_TEST
    train = pd.read_csv(root / "Train.csv")
    assert list(pd.read_csv(root / "Test.csv").columns) == ["ID"]  # no test label in the release
    truth = pd.read_csv(truth_dir(root) / "train_truth.csv")
    assert truth.ID.tolist() == train.ID.tolist() and truth.label.tolist() == train.label.tolist()
    assert (truth.label != truth.true_label).sum() == round(0.02 * N_TRAIN)  # exactly 2% wrong training labels
    test_truth = pd.read_csv(truth_dir(root) / "test_labels.csv")
    assert test_truth.ID.tolist() == test_index.ids
    for table, column in ((truth, "true_label"), (test_truth, "label")):  # true labels: positive scenes, exactly
        assert ((table.kind == "positive") == (table[column] == 1)).all()
    share = truth.true_label.mean()
    assert 0.11 < share < 0.25, f"{name}: {share:.1%} positives"
    assert summary["train"]["positives"] == truth.true_label.sum()


def test_unknown_family_is_refused(tmp_path):
    with pytest.raises(ValueError, match="difficulty must be one of .*small.*got 'nope'"):
        generate_release(tmp_path / "x", 10, 10, difficulty="nope")


def test_the_command_line_draws_a_family(tmp_path):
    main(["--out", str(tmp_path / "cloud"), "--n-train", "20", "--n-test", "10", "--difficulty", "cloud",
          "--workers", "1"])
    kinds = set(pd.read_csv(truth_dir(tmp_path / "cloud") / "train_truth.csv").kind)
    assert kinds <= set(KINDS) and "positive" in kinds


@functools.cache
def _batch(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return family_batch(name, 11, 200)


def _vh_change(patches: np.ndarray) -> np.ndarray:
    return patches[..., [raw_index("desc_diff_vh"), raw_index("asc_diff_vh")]].mean(-1)


def _low_tail(change: np.ndarray) -> np.ndarray:
    """Per image: how far its strongest local backscatter drop (8 x 8 blocks) lies below its median, dB."""
    blocks = change.reshape(len(change), 8, 8, 8, 8).mean(axis=(2, 4))
    return np.median(change, axis=(1, 2)) - blocks.min(axis=(1, 2))


def test_the_evidence_lies_where_each_family_puts_it():
    x, y, kind = _batch("small")
    positive, old = y == 1, kind == KINDS.index("old_scar")
    drop = _low_tail(_vh_change(x))
    assert drop[positive].mean() > drop[old].mean() + 1  # co-located slides: a SAR drop; old scars: none

    x, y, _ = _batch("optical")
    assert _low_tail(_vh_change(x))[y == 1].mean() < drop[positive].mean() - 1  # SAR-quiet slides

    visible = [raw_index(b) for b in ("red", "green", "blue")]
    cloudy = {name: (_batch(name)[0][..., visible].mean(-1) > 3500).mean(axis=(1, 2)) for name in ("small", "cloud")}
    assert cloudy["cloud"][_batch("cloud")[1] == 1].mean() > 2 * cloudy["small"][positive].mean()

    offsets = {name: np.abs(np.median(_vh_change(_batch(name)[0]), axis=(1, 2))).mean() for name in ("small", "offset")}
    assert offsets["offset"] > 3 * offsets["small"]  # a pre/post calibration difference over the whole patch

    deep = {}
    for name in ("small", "large", "weak"):
        x, y, _ = _batch(name)
        deep[name] = _low_tail(_vh_change(x))[y == 1].mean()
    assert deep["large"] > deep["small"] + 0.5 > deep["weak"] + 1  # large slides fill whole blocks; weak ones are faint
