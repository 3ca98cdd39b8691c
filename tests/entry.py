"""Run the entry points as a user does (``train.py``, ``predict.py``, ``map.py``, ``python -m landslide.aggregate``,
``python -m landslide.report``), by default inside the test process: the same Hydra ``main`` with the same
command-line arguments and environment, its output captured, without paying the interpreter's start and the imports
(about 7 s) for every call. ``process=True`` starts a real interpreter, for what needs one (a killed process,
several processes, an import-time setting)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path
from unittest import mock

import torch
from hydra.core.global_hydra import GlobalHydra

from conftest import REPO


def _main_of(args: tuple[str, ...]):
    """The function a command line runs, and the arguments it reads from ``sys.argv``."""
    from landslide import aggregate, cli, report

    scripts = {"train.py": cli.train_entry, "predict.py": cli.predict_entry, "map.py": cli.map_entry}
    modules = {"landslide.aggregate": aggregate.main, "landslide.report": report.main,
               "landslide.audit": cli.audit_entry}
    if args[0] in scripts:
        return scripts[args[0]], list(args)
    if args[0] == "-m" and args[1] in modules:
        return modules[args[1]], [args[1], *args[2:]]
    return None, None


def run(*args: str, env: dict, check: bool = True, process: bool = False, cwd: Path = REPO,
        timeout: int = 900) -> subprocess.CompletedProcess:
    """``python <args>`` in ``cwd`` with ``env``; exit status, stdout and stderr as a subprocess's."""
    main, argv = (None, None) if process else _main_of(args)
    if main is None:
        script = [str(REPO / args[0]), *args[1:]] if args[0].endswith(".py") else list(args)
        done = subprocess.run([sys.executable, *script], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)
    else:
        done = _run_here(main, argv, env, cwd)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _run_here(main, argv: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    before = os.getcwd()
    code: int | str | None = 0
    GlobalHydra.instance().clear()
    found = list(logging.root.handlers)  # pytest's capture: a new interpreter's root logger has no handler
    for handler in found:
        logging.root.removeHandler(handler)
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    sys.path[:0] = extra  # as the interpreter would put them
    try:
        with mock.patch.dict(os.environ, env, clear=True), mock.patch.object(sys, "argv", argv), \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            if "ignore" in env.get("PYTHONWARNINGS", ""):
                warnings.simplefilter("ignore")
            if env.get("OMP_NUM_THREADS"):
                torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
            os.chdir(cwd)
            try:
                main()  # every entry reads its arguments from sys.argv, as from a command line
            except SystemExit as stop:
                code = stop.code
    finally:
        for handler in list(logging.root.handlers):  # the job's log file and captured console stay with it
            logging.root.removeHandler(handler)
            handler.close()
        for handler in found:
            logging.root.addHandler(handler)
        os.chdir(before)
        for path in extra:
            sys.path.remove(path)
        torch.set_num_threads(threads)
        GlobalHydra.instance().clear()
    returncode = code if isinstance(code, int) else (0 if code is None else 1)
    if isinstance(code, str):
        err.write(code + "\n")
    return subprocess.CompletedProcess(argv, returncode, out.getvalue(), err.getvalue())


def one_error_line(done: subprocess.CompletedProcess) -> str:
    """The single error line of a command that stopped on bad input (exit 2, no traceback)."""
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if "ERROR" in line]
    assert len(errors) == 1, output[-3000:]
    return errors[0]
