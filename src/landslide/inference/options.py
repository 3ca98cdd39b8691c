"""The options of ``predict.py`` and ``map.py``, and where their outputs go, checked before any work: one
:class:`ConfigError` line naming the option (the commands check them again before Hydra makes an output folder)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from landslide.errors import ConfigError, first_line
from landslide.files import check_writable
from landslide.inference.map_outputs import ENCODINGS
from landslide.localisation import METHODS
from landslide.run_record import MANIFEST

#: precisions prediction may be asked for (null: as the run recorded)
PRECISIONS = ("32-true", "bf16-mixed")
NAN_POLICIES = ("error", "fill")
BLENDS = ("mean", "gaussian")
#: what a window gives its pixels: its probability, that times its pixel evidence, or a segmenting network's pixel
#: probabilities
MODES = ("window", *METHODS, "segment")
DEVICE_TYPES = ("cpu", "cuda", "mps")
#: window size of the scene maps (the patch size)
WINDOW = 64


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def need(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def check_device(device: str) -> None:
    """``auto``, or a device torch knows and this machine has."""
    if device == "auto":
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"device={device}: not a device ({first_line(err)}); use auto, cpu or cuda[:N]") from None
    need(dev.type in DEVICE_TYPES, f"device={device}: use auto, cpu, cuda[:N] or mps")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        need(count > 0, f"device={device}: no CUDA GPU is available here; use device=auto or cpu")
        need(dev.index is None or dev.index < count, f"device={device}: this machine has {count} GPU(s)")
    if dev.type == "mps":
        need(torch.backends.mps.is_available(), f"device={device}: MPS is not available here")


def check_common(tta: Any, device: Any, batch_size: Any) -> None:
    need(tta is None or isinstance(tta, bool), f"tta must be null (as the run recorded), true or false, got {tta!r}")
    need(_integer(batch_size) and batch_size >= 1, f"batch_size must be an integer >= 1, got {batch_size!r}")
    check_device(str(device))


def check_predict_options(*, tta: Any, precision: Any, nan_policy: Any, device: Any, batch_size: Any) -> None:
    """``predict.py``'s options."""
    check_common(tta, device, batch_size)
    need(precision is None or precision in PRECISIONS,
         f"precision must be null (as the run recorded) or one of {', '.join(PRECISIONS)}, got {precision!r}")
    need(nan_policy is None or nan_policy in NAN_POLICIES,
         f"data.nan_policy must be null (as the run recorded) or one of {', '.join(NAN_POLICIES)}, got {nan_policy!r}")


#: a training run's own folders: no command's output goes into them
RUN_RECORD_FOLDERS = (".hydra", "folds", "stacked")


def training_run_of(path: Path | str) -> Path | None:
    """The training run folder (one holding ``run.json``) that ``path`` is or lies in; None when there is none."""
    path = Path(path).resolve()
    return next((folder for folder in (path, *path.parents) if (folder / MANIFEST).is_file()), None)


def check_not_in_run_records(option: str, path: Path | str, *, folder: bool) -> None:
    """Stop when the output ``option=path`` would replace what a training run holds: the run folder itself, a file
    directly in it (``run.json``, ``cv_summary.json``, ...), anything in its ``.hydra/``, ``folds/`` or ``stacked/``.
    A new subfolder of a run (its ``predictions/``, ``audit/``, ``maps/``) is fine."""
    run = training_run_of(path)
    if run is None:
        return
    parts = Path(path).resolve().relative_to(run).parts
    need(bool(parts), f"{option}={path}: holds a training run ({MANIFEST}); choose another folder")
    need(not (len(parts) == 1 and not folder) and parts[0] not in RUN_RECORD_FOLDERS,
         f"{option}={path}: among the files of the training run {run}, which it would replace or mix with; "
         f"write it elsewhere (a new subfolder of the run will do)")


def check_prediction_out(run_dir: Path | str, out: Path | str, command: str = "predict",
                         default: str = "predictions") -> None:
    """``out`` is a folder ``command`` may fill: not the run directory (the command's own ``.hydra/`` would replace
    the run's), not another training run, nothing among a run's records or inside a ``.hydra/`` folder."""
    run, target = Path(run_dir).resolve(), Path(out).resolve()
    need(target != run, f"out={out}: the run directory itself, whose .hydra/ and files {command} must not replace; "
                        f"choose another folder (the default is {Path(run_dir) / default})")
    need(".hydra" not in target.parts, f"out={out}: inside a .hydra/ folder, which holds Hydra's record of a run")
    check_not_in_run_records("out", out, folder=True)
    check_writable("out", Path(out), folder=True)


def check_map_options(*, mode: Any, stride: Any, blend: Any, blend_by_mode: Any, dtype: Any, threshold: Any,
                      min_valid: Any, min_area_m2: Any, smooth: Any, windows_per_batch: Any, batch_size: Any,
                      tta: Any, device: Any) -> None:
    """``map.py``'s options."""
    check_common(tta, device, batch_size)
    need(mode in MODES, f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    need(_integer(stride) and 1 <= stride <= WINDOW, f"stride must be an integer in [1, {WINDOW}], got {stride!r}")
    need(blend is None or blend in BLENDS,
         f"blend must be null (by mode) or one of {', '.join(BLENDS)}, got {blend!r}")
    need(isinstance(blend_by_mode, Mapping) and set(blend_by_mode) == set(MODES)
         and all(b in BLENDS for b in blend_by_mode.values()),
         f"blend_by_mode must give each mode ({', '.join(MODES)}) one of {', '.join(BLENDS)}, got {blend_by_mode!r}")
    need(dtype in ENCODINGS, f"dtype must be one of {', '.join(ENCODINGS)}, got {dtype!r}")
    need(_number(threshold) and 0 <= threshold <= 1, f"threshold must be in [0, 1], got {threshold!r}")
    need(_number(min_valid) and 0 <= min_valid <= 1, f"min_valid must be in [0, 1], got {min_valid!r}")
    need(_number(min_area_m2) and min_area_m2 >= 0, f"min_area_m2 must be a number >= 0, got {min_area_m2!r}")
    need(_integer(smooth) and 0 <= smooth <= 8, f"smooth must be an integer in [0, 8], got {smooth!r}")
    need(_integer(windows_per_batch) and windows_per_batch >= 1,
         f"windows_per_batch must be an integer >= 1, got {windows_per_batch!r}")


def map_outputs(out: Path | str, vector: Path | str | None = None, summary: Path | str | None = None,
                figure: Path | str | None = None) -> dict[str, Path]:
    """A map's outputs by option (the summary defaults to ``out`` with ``.json``)."""
    out = Path(out)
    named = {"out": out, "vector": vector, "summary": summary or out.with_suffix(".json"), "figure": figure}
    return {option: Path(path) for option, path in named.items() if path}


def check_map_outputs(outputs: dict[str, Path], inputs: dict[str, Path | str | None]) -> None:
    """Every output its own file, none of them an input (the scene, the truth polygons) or a training run's file,
    each writable."""
    seen: dict[Path, str] = {}
    for option, path in inputs.items():
        if path:
            seen[Path(path).resolve()] = option
    for option, path in outputs.items():
        resolved = path.resolve()
        other = seen.get(resolved)
        if other in inputs:
            raise ConfigError(f"{option}={path} would overwrite the input {other}={inputs[other]}; write it elsewhere")
        if other is not None:
            raise ConfigError(f"{option}={path} and {other}={outputs[other]} name the same file; each output needs "
                              "its own")
        seen[resolved] = option
        if option == "figure" and path.suffix.lower() != ".png":
            raise ConfigError(f"figure={path}: the map's figure is a PNG; name it <name>.png")
        check_not_in_run_records(option, path, folder=False)
        check_writable(option, path, folder=False)
