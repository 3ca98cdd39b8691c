"""The figures of a run and of the report, read back from the figure objects: readable axes for short runs,
values drawn where they belong; the fold figures' PNGs beside the loggers' copies."""

from __future__ import annotations

import numpy as np
import pytest
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from landslide.cv_results import epoch_curve, epoch_rows
from landslide.plots.curves import approach_curves_figure, f1_curve_figure, mean_curves_figure
from landslide.plots.run import confusion_figure, pr_curve_figure
from landslide.training.loggers import log_figure


def test_a_one_epoch_sweep_draws_points_on_a_readable_f1_axis():
    figure = approach_curves_figure({"final": np.array([0.99]), "only_sar": np.array([1.0])})
    ax = figure.axes[0]
    low, high = ax.get_ylim()
    assert low <= 0.9 and 1.0 < high <= 1.01  # not 0.96 to 1.04 around the points
    assert ax.get_xlim() == (0.5, 1.5) and [t for t in ax.get_xticks() if 0.5 <= t <= 1.5] == [1]
    assert all(line.get_marker() == "o" for line in ax.get_lines())
    assert [line.get_ydata()[0] for line in ax.get_lines()] == [0.99, 1.0]


def test_f1_axes_keep_low_scores_and_long_curves_without_markers():
    curve = np.linspace(0.2, 0.9, 30)
    ax = approach_curves_figure({"a": curve}).axes[0]
    assert ax.get_ylim()[0] == 0.1 and ax.get_lines()[0].get_marker() in (None, "None", "")
    fold = f1_curve_figure([{"epoch": 0, "val/f1": 0.5, "val/f1_best": 0.6}], "fold 0").axes[0]
    assert all(line.get_marker() == "o" for line in fold.get_lines())  # one epoch: visible points


def test_mean_curves_average_the_folds_that_reached_each_epoch():
    summary = {"folds": [{"history": [{"epoch": 0, "val/f1": 0.5, "train/loss": 1.0},
                                      {"epoch": 1, "val/f1": 0.7, "train/loss": 0.8}]},
                         {"history": [{"epoch": 0, "val/f1": 0.9, "train/loss": 0.6}]}]}
    mean, std = epoch_curve(summary, "val/f1")
    assert mean == pytest.approx([0.7, 0.7]) and std == pytest.approx([0.2, 0.0])
    rows = list(epoch_rows(summary))
    assert [r["epoch"] for r in rows] == [1, 2] and rows[0]["cv/train_loss"] == pytest.approx(0.8)
    assert "cv/val_loss" not in rows[0]  # never logged: left out, not NaN
    ax = mean_curves_figure({"validation": (mean, std)}, "F1", "t", f1=True).axes[0]
    assert list(ax.get_lines()[0].get_ydata()) == pytest.approx([0.7, 0.7])


def test_pr_curve_and_confusion_matrix_show_the_chosen_threshold():
    labels = np.array([0, 0, 0, 1, 1, 0, 1, 0])
    probs = np.array([0.1, 0.2, 0.7, 0.8, 0.4, 0.05, 0.9, 0.3])
    pr = pr_curve_figure(labels, probs, 0.5, "t").axes[0]
    point = next(line for line in pr.get_lines() if line.get_marker() == "o")
    # at 0.5: predicted 0.7, 0.8, 0.9 -> 2 of 3 right, 2 of 3 positives found
    assert (point.get_xdata()[0], point.get_ydata()[0]) == pytest.approx((2 / 3, 2 / 3))
    texts = [t.get_text() for t in confusion_figure(labels, probs, 0.5, "t").axes[0].texts]
    assert [t.split("\n")[0] for t in texts] == ["4", "1", "1", "2"]  # TN FP / FN TP


def test_fold_figures_are_written_as_png_beside_the_loggers(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="tb", version="fold_0")
    log_figure([logger], "curves/val_f1", f1_curve_figure([{"epoch": 0, "val/f1": 0.5}], "f"),
               folder=tmp_path / "figures")
    logger.finalize("success")
    assert (tmp_path / "figures" / "curves_val_f1.png").stat().st_size > 1000
    events = EventAccumulator(str(tmp_path / "tb" / "fold_0"), size_guidance={"images": 0})
    events.Reload()
    assert events.Tags()["images"] == ["curves/val_f1"]


def test_report_names_jobs_that_share_a_name_by_their_differing_overrides(tmp_path):
    from landslide.report import approach_labels

    def job(name: str, *overrides: str) -> dict:
        folder = tmp_path / f"{len(list(tmp_path.iterdir()))}"
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        return {"name": name, "path": str(folder)}

    summaries = [job("final", "debug=tiny", "model.optimizer.lr=0.0012345678", "data.batch_size=64"),
                 job("final", "debug=tiny", "model.optimizer.lr=0.004", "data.batch_size=64"),
                 job("only_sar", "debug=tiny", "experiment=only_sar"),
                 job("no_fpn", "debug=tiny", "+model.net.dropout=0.1", "data.augment.dropout=0.2"),
                 job("no_fpn", "debug=tiny", "+model.net.dropout=0.3", "data.augment.dropout=0.2")]
    assert approach_labels(summaries) == ["final: lr=0.00123", "final: lr=0.004", "only_sar",
                                          "no_fpn: dropout=0.1", "no_fpn: dropout=0.3"]
    twins = [job("x", "seed=1"), job("x", "seed=1")]
    first, second = approach_labels(twins)
    assert first != second and first.startswith("x (")
