"""Shared by the fault-injection tests (test_faults_*.py): run the vledge CLI as a user does, check it failed cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

# One torch thread: on this 2-core machine shared with other jobs, two threads made a tiny distillation
# 30x slower (10.4 s vs 0.3 s, same result).
CHILD_ENV = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_vledge(*args, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    """``python -m vledge ARGS`` in a fresh process; stdout and stderr captured as text."""
    env = {**os.environ, **CHILD_ENV}
    return subprocess.run([sys.executable, "-m", "vledge", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, **popen)


def _default_sigint() -> None:
    # A shell's background jobs inherit SIGINT ignored, and Python then never raises KeyboardInterrupt:
    # the child must see SIGINT as a user at a terminal would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_vledge(*args, **popen) -> subprocess.Popen:
    """``python -m vledge ARGS`` started in the background; stdout and stderr piped unless ``popen`` says otherwise."""
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "preexec_fn": _default_sigint, **popen}
    return subprocess.Popen([sys.executable, "-m", "vledge", *map(str, args)], env={**os.environ, **CHILD_ENV}, **options)


def assert_clean_failure(result: subprocess.CompletedProcess, command: str, *fragments: str, code: int = 2) -> str:
    """A named error on one line of stderr and a non-zero exit; never a Python traceback."""
    err = result.stderr
    assert "Traceback" not in err, err
    assert result.returncode == code, (result.returncode, err)
    assert f"vledge {command}: error: " in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err
