"""The ``scenes`` difficulty: windows cut from generated scenes, labelled by the slide pixels they hold."""

import numpy as np

from landslide.synth import scenes
from landslide.synth.release import generate_release, truth_dir


def test_windows_of_scenes_a_fifth_positive_and_deterministic():
    x, y, kinds = scenes.generate_batch(5, 128)
    assert x.shape == (128, 64, 64, 12) and np.isfinite(x).all()
    assert 0.1 <= y.mean() <= 0.35
    assert ((kinds == 0) == (y == 1)).all() and set(np.unique(kinds)) <= {0, 1, 2}
    again, y2, _ = scenes.generate_batch(5, 128)
    np.testing.assert_array_equal(x, again)
    np.testing.assert_array_equal(y, y2)
    other, _, _ = scenes.generate_batch(6, 128)
    assert not np.allclose(x, other)


def test_release_of_scene_windows(tmp_path):
    summary = generate_release(tmp_path / "scenes", 64, 16, seed=2, workers=1, difficulty="scenes")
    assert summary["train"]["n"] == 64 and summary["train"]["positives"] > 0
    assert set(summary["train"]["kinds"]) == set(scenes.KINDS)
    assert (truth_dir(tmp_path / "scenes") / "test_labels.csv").is_file()
