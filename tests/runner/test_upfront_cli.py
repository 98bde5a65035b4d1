"""`hpccloud run` refuses bad targets and machine limits before any work: exit 2, one message."""

import os
import sys
import time

import pytest

from hpccloud.testing.mpi_pytest import child_env, run_mpi

HPCCLOUD = [sys.executable, "-m", "hpccloud", "run", "--steps", "2", "--quiet"]


def _refused(res, match):
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("hpccloud: error")]
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and len(errors) == 1, res.stderr[-2000:]
    assert match in errors[0] and "Fix:" in errors[0], errors[0]


@pytest.mark.parametrize("case", ["output-is-file", "json-is-folder", "too-big"])
def test_refused_before_work(tmp_path, case):
    (tmp_path / "afile").write_text("x")
    args, match = {
        "output-is-file": (["--output", str(tmp_path / "afile")], "is a file, not a folder"),
        "json-is-folder": (["--json", str(tmp_path)], "is a folder"),
        "too-big": (["--param", "n=120000"], "would need about"),
    }[case]
    t0 = time.perf_counter()
    res = run_mpi([*HPCCLOUD, *args], 2, 180, env=child_env(2, {"PYTHONPATH": os.getcwd()}))
    _refused(res, match)
    assert "initial placement" not in res.stdout  # no probe ran, nothing was allocated
    assert time.perf_counter() - t0 < 120


_AGGREGATES_STAY = """
name = "aggregates-stay"
[[regions]]
name = "us-east"
jurisdiction = "US"
price_per_core_hour = 0.048
ranks = [1]
[[regions]]
name = "eu-north"
jurisdiction = "EU"
price_per_core_hour = 0.032
ranks = [0]
[data_classes.public]
regions = ["*"]
aggregates_may_leave = true
[data_classes.eu-personal]
jurisdictions = ["EU"]
aggregates_may_leave = false
"""


def test_kmeans_aggregates_that_may_not_leave_are_refused_before_any_data(tmp_path):
    """Every rank refuses the same way, exit 2, before a folder is made or data exists.

    (It used to be the first step's end on the ranks holding such shards: exit 1, the
    message on some ranks only, an output folder with a lock left behind.)"""
    topo = tmp_path / "t.toml"
    topo.write_text(_AGGREGATES_STAY)
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    args = ["--workload", "kmeans", "--topology", str(topo), "--param", "n=4000",
            "--output", str(out), "--checkpoint-dir", str(ckpt), "--checkpoint-every", "1"]
    res = run_mpi([*HPCCLOUD, *args], 2, 180, env=child_env(2, {"PYTHONPATH": os.getcwd()}))
    _refused(res, "aggregates of data class 'eu-personal' would leave")
    assert "aggregates_may_leave = true" in res.stderr and "eu_fraction=0" in res.stderr
    assert not out.exists() and not ckpt.exists()
    # the same job without that class runs: the check is about the class, not kmeans
    res = run_mpi([*HPCCLOUD, *args, "--param", "eu_fraction=0"], 2, 180,
                  env=child_env(2, {"PYTHONPATH": os.getcwd()}))
    assert res.returncode == 0, res.stderr[-2000:]


def test_a_run_refused_after_its_folders_were_claimed_leaves_no_folder(tmp_path):
    """The key file is read after the output folders are claimed: the refusal removes the
    folders the job created (and their new parents); a folder that was there stays."""
    key = tmp_path / "key"
    key.write_text("short")
    there = tmp_path / "there"
    there.mkdir()
    (there / "keep.txt").write_text("x")
    args = ["--output", str(tmp_path / "new" / "out"), "--checkpoint-dir", str(there),
            "--key-file", str(key)]
    res = run_mpi([*HPCCLOUD, *args], 2, 180, env=child_env(2, {"PYTHONPATH": os.getcwd()}))
    _refused(res, "not an AES key")
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in there.iterdir()) in (["keep.txt"], [".hpccloud.lock", "keep.txt"])
