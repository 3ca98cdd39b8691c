import numpy as np
import pandas as pd

from landslide.bands import channel_index
from landslide.data.preprocess import to_channels
from landslide.synth.easy import KINDS, generate_batch
from landslide.synth.release import main


def test_deterministic_for_a_seed():
    a, la, _ = generate_batch(7, 16)
    b, lb, _ = generate_batch(7, 16)
    c, _, _ = generate_batch(8, 16)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.allclose(a, c)


def test_layout_share_and_physics():
    raw, labels, kind = generate_batch(0, 1200)
    assert raw.shape == (1200, 64, 64, 12) and raw.dtype == np.float64
    assert 0.14 < labels.mean() < 0.21
    ch = to_channels(raw)
    water = kind == KINDS.index("water")
    positive = labels == 1
    vv = ch[:, channel_index("desc_vv_post")].mean(axis=(1, 2))
    assert vv[water].mean() < vv[~water].mean() - 3  # open water is dark in SAR
    # the landslide is a backscatter change: the most negative VH change is stronger in positives
    change = (ch[:, channel_index("desc_vh_post")] - ch[:, channel_index("desc_vh_pre")])
    smooth = change.reshape(-1, 16, 4, 16, 4).mean(axis=(2, 4)).min(axis=(1, 2))
    assert smooth[positive].mean() < smooth[kind == KINDS.index("plain")].mean() - 1.5
    # and there are clouds that the rule-based mask sees
    assert ch[:, 0].mean() > 0.02


def test_cli_writes_a_release(tmp_path, capsys):
    main(["--out", str(tmp_path), "--n-train", "20", "--n-test", "6", "--seed", "2", "--workers", "1"])
    train = pd.read_csv(tmp_path / "Train.csv")
    test = pd.read_csv(tmp_path / "Test.csv")
    assert list(train.columns) == ["ID", "label"] and len(train) == 20 and list(test.columns) == ["ID"]
    assert len(list((tmp_path / "train_data").glob("*.npy"))) == 20
    assert np.load(tmp_path / "test_data" / f"{test.ID[0]}.npy").shape == (64, 64, 12)
    assert "wrote 20 train" in capsys.readouterr().out
