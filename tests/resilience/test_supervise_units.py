"""The supervisor's pure parts: command rewriting, progress parsing, failure text, bad usage."""

import subprocess
import sys

import pytest

from hpccloud.errors import InvalidArgument
from hpccloud.supervise import (
    ProgressWriter,
    _failure_text,
    launcher_ranks,
    read_progress,
    supervise,
    with_flag,
    with_ranks,
)


def test_progress_round_trip_and_torn_line(tmp_path):
    path = str(tmp_path / "p.tsv")
    w = ProgressWriter(path)
    w.start(10)
    for done in (11, 12):
        w.step(done)
    w.checkpoint(12, "/c/step-00000012")
    w.close()
    with open(path, "a") as fh:
        fh.write("step\t1")  # the job died mid-line
    p = read_progress(path)
    assert p["start_step"] == 10 and p["last_step"] == 12
    assert p["checkpoints"] == [(12, "/c/step-00000012")] and p["first_step_t"] > 0
    assert read_progress(str(tmp_path / "none"))["last_step"] is None


def test_command_rewriting():
    cmd = ["srun", "--mpi=pmi2", "--ntasks=4", "hpccloud", "run", "--restart=old", "-n", "9"]
    assert launcher_ranks(cmd) == (2, 4)
    assert with_ranks(cmd, 2)[2] == "--ntasks=2" and with_ranks(cmd, 2)[-1] == "9"
    assert with_flag(cmd, "--restart", "new")[5] == "--restart=new"
    py = ["mpiexec", "-np", "3", sys.executable, "-m", "hpccloud", "run"]
    assert launcher_ranks(py) == (1, 3)
    with pytest.raises(InvalidArgument, match="rank count"):
        with_ranks(["mpiexec", "hpccloud", "run"], 2)


def test_failure_text():
    assert "stalled rank" in _failure_text(75, [])
    assert _failure_text(-9, []) == "launcher killed by signal 9"
    text = _failure_text(1, ["noise\n", "hpccloud: error on rank 2: boom\n"])
    assert text == "exit code 1: hpccloud: error on rank 2: boom"


def test_no_checkpoint_dir_is_refused():
    with pytest.raises(InvalidArgument, match="no --checkpoint-dir"):
        supervise(["mpiexec", "-n", "2", "hpccloud", "run"])


def test_bad_input_is_not_retried(tmp_path):
    # a command that fails with exit 2 (bad input) is run once
    marker = tmp_path / "runs"
    cmd = [sys.executable, "-c", f"open({str(marker)!r}, 'a').write('x'); raise SystemExit(2)",
           "--checkpoint-dir", str(tmp_path / "ck")]
    code, recs = supervise(cmd, max_restarts=3, log=lambda m: None)
    assert code == 2 and recs == [] and marker.read_text() == "x"


def test_cli_usage_errors():
    res = subprocess.run([sys.executable, "-m", "hpccloud", "supervise"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2 and "no command" in res.stderr


_FAKE_RUN = r"""
import os, sys, time
log = sys.argv[1]
n = sum(1 for _ in open(log)) if os.path.exists(log) else 0
open(log, "a").write(" ".join(sys.argv[2:]) + "\n")
if n == 0:
    if sys.argv[2] == "stepped":  # the first attempt steps (it had claimed --output), then dies
        open(os.environ["HPCCLOUD_PROGRESS_FILE"], "a").write(f"step\t1\t{time.time()}\n")
    raise SystemExit(9)
raise SystemExit(0 if "--overwrite" in sys.argv else 2)  # a refused output folder: exit 2
"""


@pytest.mark.parametrize("stepped", [True, False])
def test_a_relaunch_overwrites_only_what_an_attempt_that_stepped_left(tmp_path, monkeypatch, stepped):
    """Found by an untuned sweep: a rank killed while the results were written left half of
    them in --output; the relaunch refused them as another run's (exit 2, never retried).
    An attempt that stepped had claimed the folder: the relaunch passes --overwrite. One
    that died before stepping may have met someone else's files: no --overwrite then.
    Either way the supervisor's own temp folder is gone afterwards."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    log = tmp_path / "argv"
    cmd = [sys.executable, "-c", _FAKE_RUN, str(log), "stepped" if stepped else "setup",
           "--checkpoint-dir", str(tmp_path / "ck")]
    code, recs = supervise(cmd, max_restarts=2, log=lambda m: None)
    runs = log.read_text().splitlines()
    assert len(runs) == 2 and "--overwrite" not in runs[0]
    assert ("--overwrite" in runs[1]) == stepped
    assert code == (0 if stepped else 2) and len(recs) == 1
    assert not list(tmp_path.glob("hpccloud-supervise-*"))
