import numpy as np
import pandas as pd
import pytest

from landslide.bands import channel_index
from landslide.data.preprocess import to_channels
from landslide.synth.realistic import KINDS, generate_batch
from landslide.synth.release import generate_release, main, truth_dir


@pytest.fixture(scope="module")
def batch():
    return generate_batch(5, 400)


def test_every_confounder_kind_is_present_and_positives_are_a_sixth(batch):
    raw, labels, kind = batch
    assert raw.shape == (400, 64, 64, 12) and np.isfinite(raw).all()
    assert set(np.unique(kind)) == set(range(len(KINDS)))
    assert 0.13 < labels.mean() < 0.24 and np.array_equal(labels, kind == KINDS.index("positive"))


def test_harvests_look_like_landslides_to_band_statistics(batch):
    raw, labels, kind = batch
    ch = to_channels(raw)
    change = ch[:, channel_index("desc_vh_post")] - ch[:, channel_index("desc_vh_pre")]
    low = np.quantile(change.reshape(len(ch), -1), 0.02, axis=1)
    harvest, plain = kind == KINDS.index("harvest"), kind == KINDS.index("plain")
    # fields carry a SAR drop as deep as the slides'; plain scenes do not
    assert low[harvest].mean() < low[plain].mean() - 1 and abs(low[harvest].mean() - low[labels == 1].mean()) < 2


def test_deterministic_for_a_seed():
    a, la, ka = generate_batch(3, 12)
    b, lb, kb = generate_batch(3, 12)
    assert np.array_equal(a, b) and np.array_equal(la, lb) and np.array_equal(ka, kb)
    assert not np.allclose(a, generate_batch(4, 12)[0])


def test_wrong_training_labels_and_clean_separate_test_labels(tmp_path):
    root = tmp_path / "release"
    summary = generate_release(root, 100, 30, seed=2, workers=1, difficulty="realistic", label_noise=0.05)
    train = pd.read_csv(root / "Train.csv")
    truth = pd.read_csv(truth_dir(root) / "train_truth.csv")
    assert (train.label != truth.true_label).sum() == 5 and list(train.ID) == list(truth.ID)
    test = pd.read_csv(root / "Test.csv")
    labels = pd.read_csv(tmp_path / "release_truth" / "test_labels.csv")
    assert list(test.columns) == ["ID"] and list(labels.ID) == list(test.ID)
    assert labels.label.sum() == summary["test"]["positives"] and set(labels.kind) <= set(KINDS)
    assert not list(root.glob("*label*")) and not list(root.glob("*truth*"))  # nothing training could read
    again = tmp_path / "again"
    generate_release(again, 100, 30, seed=2, workers=1, difficulty="realistic", label_noise=0.05)
    assert pd.read_csv(again / "Train.csv").equals(train)


def test_cli_difficulty_and_bad_noise(tmp_path, capsys):
    main(["--out", str(tmp_path / "r"), "--n-train", "10", "--n-test", "4", "--workers", "1",
          "--difficulty", "realistic", "--label-noise", "0.1"])
    assert "realistic, 10.0% wrong training labels" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "s"), "--n-train", "10", "--n-test", "4", "--label-noise", "0.7"])
    assert "label_noise must be in [0, 0.5)" in capsys.readouterr().err


@pytest.mark.parametrize("option, value, message", [
    ("--n-train", "-5", "n_train must be an integer >= 1 (patches to write), got -5"),
    ("--n-test", "0", "n_test must be an integer >= 1 (patches to write), got 0"),
    ("--workers", "0", "workers must be >= 1, got 0"),
])
def test_cli_refuses_counts_that_write_nothing(option, value, message, tmp_path, capsys):
    args = {"--out": str(tmp_path / "r"), "--n-train": "10", "--n-test": "4", "--workers": "1", option: value}
    with pytest.raises(SystemExit) as done:
        main([part for pair in args.items() for part in pair])
    assert done.value.code == 2 and message in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_cli_writes_only_into_a_new_or_empty_folder(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "Train.csv").write_text("ID,label\nmine,1\n")
    (tmp_path / "file").write_text("a file")
    for out, message in [(tmp_path / "full", "not empty"), (tmp_path / "file", "a file; name a folder")]:
        with pytest.raises(SystemExit) as done:
            main(["--out", str(out), "--n-train", "10", "--n-test", "4", "--workers", "1"])
        assert done.value.code == 2 and f"--out {out}: {message}" in capsys.readouterr().err
    assert (tmp_path / "full" / "Train.csv").read_text() == "ID,label\nmine,1\n"
    (tmp_path / "empty").mkdir()
    main(["--out", str(tmp_path / "empty"), "--n-train", "10", "--n-test", "4", "--workers", "1"])
    assert (tmp_path / "empty" / "Train.csv").is_file()
