"""The kernel tests pass as plain Python too (``NUMBA_DISABLE_JIT=1``), in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from kernels_testutil import NO_JIT

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TIMEOUT_S = 300


@pytest.mark.skipif(NO_JIT, reason="already running without JIT")
def test_kernel_suite_passes_without_jit():
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", PYTHONPATH=str(ROOT))
    # the MPI warm-up test measures compilation, which means nothing without JIT
    cmd = [sys.executable, "-m", "pytest", str(HERE), "-q", "-x", "-p", "no:cacheprovider",
           "--deselect", f"{HERE.relative_to(ROOT)}/test_nojit.py",
           "-k", "not mpi and not bench_cli", "-o", "addopts=", "--timeout", str(TIMEOUT_S)]
    try:
        res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"no-JIT run did not finish in {TIMEOUT_S} s:\n{exc.stdout}\n{exc.stderr}")
    tail = "\n".join((res.stdout + res.stderr).splitlines()[-40:])
    assert res.returncode == 0, tail
    assert " passed" in res.stdout and "error" not in res.stdout.splitlines()[-1], tail
