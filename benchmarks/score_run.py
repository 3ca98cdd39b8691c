"""Score a run's test predictions on the clean labels of a generated release:
``python benchmarks/score_run.py RUN_DIR RELEASE PRED_DIR OUT.json``.

Prints and writes test F1, AUC and the filter's figures (:func:`accuracy.score_predictions`) and each fold's filter on
its held-out part against the clean training labels (:func:`accuracy.filter_by_fold`); a run trained with
``filter=none`` has no filter to score (the GPU suite does not score its unfiltered run).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
from accuracy import filter_by_fold, score_predictions

from landslide.synth.release import truth_dir


def main(argv: list[str]) -> dict:
    if len(argv) != 4:
        raise SystemExit(__doc__.splitlines()[1])
    run, root, pred, dest = map(Path, argv)
    truth = pd.read_csv(truth_dir(root) / "test_labels.csv")
    result = {**score_predictions(pred, truth), "filter_by_fold": filter_by_fold(run, root)}
    dest.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "filter_by_fold"}))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
