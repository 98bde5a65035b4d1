"""Stall detection under real mpiexec: a SIGSTOPped rank ends the job with one message and exit 75."""

import os
import time
from pathlib import Path

import pytest

from hpccloud.comm.watchdog import STALL_EXIT_CODE
from hpccloud.testing.mpi_pytest import run_mpi

CHILD = str(Path(__file__).with_name("stall_child.py"))


@pytest.mark.parametrize("nranks,stop_rank", [(3, 2), (2, 0)])
def test_stopped_rank_is_named_once(nranks, stop_rank):
    t0 = time.monotonic()
    res = run_mpi(["python", CHILD, str(stop_rank), "4", "2"], nranks, timeout_s=60)
    elapsed = time.monotonic() - t0
    assert res.returncode == STALL_EXIT_CODE, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "stalled" in ln]
    assert len(lines) == 1, res.stderr
    region = "eu-north" if stop_rank == 0 else "us-east"
    assert f"rank {stop_rank} (host {os.uname().nodename}, region {region})" in lines[0]
    assert "completed" not in res.stdout
    assert elapsed < 30


def test_no_stall_no_abort():
    res = run_mpi(["python", CHILD, "9", "0", "2"], 3, timeout_s=60)
    assert res.returncode == 0 and "completed" in res.stdout, res.stderr
