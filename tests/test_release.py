"""The release reader: round trip, and a clear error for each kind of bad input."""

import logging

import numpy as np
import pandas as pd
import pytest

from conftest import write_release
from landslide.data.cache import load_or_build
from landslide.data.release import ReleaseError, load_patch, read_release_index, read_split_index


def test_round_trip_follows_csv_order(tiny_release, tmp_path):
    train, _ = read_release_index(tiny_release)
    table = pd.read_csv(tiny_release / "Train.csv")
    assert train.ids == table["ID"].tolist()
    assert np.array_equal(train.labels, table["label"].to_numpy())
    cached = load_or_build(tiny_release, tmp_path / "cache", 3500.0, progress=False)
    assert cached.train.images.shape == (120, 13, 64, 64) and cached.train.images.dtype == np.float32
    assert cached.test.ids == pd.read_csv(tiny_release / "Test.csv")["ID"].tolist()
    first = np.load(tiny_release / "train_data" / f"{train.ids[5]}.npy")
    assert np.allclose(cached.train.images[5, 1], first[..., 0])  # red, from the 6th row of Train.csv


def test_wrong_shape_names_the_file(tmp_path):
    train_ids, _ = write_release(tmp_path)
    bad = tmp_path / "train_data" / f"{train_ids[3]}.npy"
    np.save(bad, np.zeros((64, 64, 11)))
    with pytest.raises(ReleaseError) as err:
        load_or_build(tmp_path, tmp_path / "cache", 3500.0, progress=False)
    assert str(bad) in str(err.value) and "(64, 64, 11)" in str(err.value)
    assert "\n" not in str(err.value)


def test_wrong_dtype(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((64, 64, 12), np.int16))
    with pytest.raises(ReleaseError, match="dtype int16"):
        load_patch(path)


def test_nan_is_an_error_by_default_and_can_be_filled(tmp_path):
    patch = np.ones((64, 64, 12))
    patch[0, 0, 4] = np.nan
    patch[1, 1, 4] = np.inf
    path = tmp_path / "x.npy"
    np.save(path, patch)
    with pytest.raises(ReleaseError, match="2 NaN/Inf"):
        load_patch(path)
    filled, count = load_patch(path, nan_policy="fill")
    assert count == 2 and np.isfinite(filled).all() and filled[0, 0, 4] == 1.0


def test_missing_file(tmp_path):
    train_ids, _ = write_release(tmp_path)
    (tmp_path / "train_data" / f"{train_ids[0]}.npy").unlink()
    with pytest.raises(ReleaseError, match=f"have no .npy file.*{train_ids[0]}"):
        read_split_index(tmp_path, "train")


def test_duplicate_ids(tmp_path):
    write_release(tmp_path)
    table = pd.read_csv(tmp_path / "Train.csv")
    pd.concat([table, table.head(1)]).to_csv(tmp_path / "Train.csv", index=False)
    with pytest.raises(ReleaseError, match=r"Train.csv: 1 duplicated ID.*T000"):
        read_split_index(tmp_path, "train")


def test_labels_not_binary(tmp_path):
    write_release(tmp_path)
    table = pd.read_csv(tmp_path / "Train.csv")
    table.loc[2, "label"] = 2
    table.to_csv(tmp_path / "Train.csv", index=False)
    with pytest.raises(ReleaseError, match="Train.csv: 1 label"):
        read_split_index(tmp_path, "train")


def test_ids_in_both_splits(tmp_path):
    train_ids, _ = write_release(tmp_path)
    pd.DataFrame({"ID": [train_ids[0]]}).to_csv(tmp_path / "Test.csv", index=False)
    np.save(tmp_path / "test_data" / f"{train_ids[0]}.npy", np.zeros((64, 64, 12)))
    with pytest.raises(ReleaseError, match="in both"):
        read_release_index(tmp_path)


@pytest.mark.parametrize("content", ["", "ID\n"])
def test_empty_csv(tmp_path, content):
    write_release(tmp_path)
    (tmp_path / "Test.csv").write_text(content)
    with pytest.raises(ReleaseError, match="Test.csv: (the file is empty|no rows)"):
        read_split_index(tmp_path, "test")


def test_missing_csv(tmp_path):
    with pytest.raises(ReleaseError, match="Train.csv: file not found"):
        read_split_index(tmp_path, "train")


def test_extra_files_warn_with_a_count(tmp_path, caplog):
    write_release(tmp_path)
    for i in range(3):
        np.save(tmp_path / "train_data" / f"EXTRA{i}.npy", np.zeros((64, 64, 12)))
    with caplog.at_level(logging.WARNING):
        index = read_split_index(tmp_path, "train")
    assert "3 .npy file(s) are not listed" in caplog.text
    assert len(index.ids) == 12
