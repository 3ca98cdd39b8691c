"""The embedded synthetic release: generated once where its settings place it, never elsewhere."""

import pandas as pd
import pytest

from conftest import data_settings
from landslide.data.datamodule import LandslideDataModule
from landslide.data.release import ReleaseError
from landslide.errors import RunError
from landslide.synth.embedded import describes, ensure_embedded_release

SIZE = {"n_train": 24, "n_test": 6, "seed": 4}
SCENES = {"n_train": 4, "n_test": 2, "seed": 4}  # a landscape per split: scenes cost more


def test_generated_once_where_the_settings_place_it(tmp_path):
    root = tmp_path / "synthetic"
    settings = {"root": str(root), **SIZE}
    assert ensure_embedded_release(root, settings, tmp_path / "cache" / ".prepare.lock")
    assert len(pd.read_csv(root / "Train.csv")) == 24 and len(pd.read_csv(root / "Test.csv")) == 6
    assert (tmp_path / "cache" / ".prepare.lock").parent.is_dir()
    before = (root / "Train.csv").stat().st_mtime_ns
    assert not ensure_embedded_release(root, settings)  # found, not made again
    assert (root / "Train.csv").stat().st_mtime_ns == before


def test_a_release_generated_with_other_settings_stops_the_run_in_one_line(tmp_path):
    root = tmp_path / "synthetic"
    assert ensure_embedded_release(root, {**SCENES, "difficulty": "scenes", "masks": True})
    assert not ensure_embedded_release(root, {**SCENES, "difficulty": "scenes"})  # its masks serve a run without any
    for other, said in (({"difficulty": "easy"}, "difficulty='scenes' (asked 'easy')"),
                        ({"seed": 5}, "seed=4 (asked 5)"), ({"n_train": 30}, "n_train=4 (asked 30)")):
        with pytest.raises(RunError) as err:
            ensure_embedded_release(root, {**SCENES, "difficulty": "scenes", **other})
        message = str(err.value)
        assert message.startswith(f"{root}: generated with other settings: {said}") and "\n" not in message
    from landslide.synth.release import settings_file

    settings_file(root).write_text("{not json")
    with pytest.raises(RunError, match="generated.json: cannot be read as JSON"):
        ensure_embedded_release(root, {**SCENES, "difficulty": "scenes"})
    masks_free = tmp_path / "plain"
    ensure_embedded_release(masks_free, {**SCENES, "difficulty": "scenes"})
    with pytest.raises(RunError, match="masks=False \\(asked True\\)"):
        ensure_embedded_release(masks_free, {**SCENES, "difficulty": "scenes", "masks": True})


def test_settings_without_a_root_apply_to_the_given_root(tmp_path):
    root = tmp_path / "release"
    assert describes(root, SIZE) and describes(root, {"root": str(tmp_path / "x" / ".." / "release"), **SIZE})
    assert ensure_embedded_release(root, SIZE) and (root / "Test.csv").is_file()


@pytest.mark.parametrize("settings", [None, {}, {"root": None, **SIZE}, {"root": "elsewhere", **SIZE}])
def test_a_release_the_settings_do_not_describe_is_never_generated(tmp_path, settings):
    root = tmp_path / "real_release"
    assert not describes(root, settings)
    assert not ensure_embedded_release(root, settings)
    assert not root.exists()


def test_the_datamodule_generates_the_embedded_release_and_refuses_a_missing_one(tmp_path):
    root = tmp_path / "synthetic"
    dm = LandslideDataModule(root, tmp_path / "cache", **data_settings(num_folds=2, progress=False),
                             synthetic={"root": root, **SIZE})
    dm.prepare_data()
    assert len(dm.train_ids) == 24 and (tmp_path / "cache" / ".prepare.lock").exists()
    missing = LandslideDataModule(tmp_path / "typo", tmp_path / "cache", **data_settings(),
                                  synthetic={"root": root, **SIZE})
    with pytest.raises(ReleaseError, match="typo/Train.csv: file not found; data.root must be a release folder"):
        missing.prepare_data()
    assert not (tmp_path / "typo").exists()
