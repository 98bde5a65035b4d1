"""Small input files: a FIFO or a device is refused at once (it used to block or read forever)."""

import os
import subprocess
import sys

import pytest

from hpccloud.errors import ConfigError, TopologyError
from hpccloud.io.small import read_regular


def test_read_regular_reads_at_most_one_byte_over_the_limit(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"x" * 5000)
    assert len(read_regular(p, 100, "thing", "fix")) == 101
    assert read_regular(p, 10_000, "thing", "fix") == b"x" * 5000
    with pytest.raises(ConfigError, match="a folder, not a regular file: not a thing. Fix: fix"):
        read_regular(tmp_path, 10, "thing", "fix")
    with pytest.raises(TopologyError, match="cannot read the thing"):
        read_regular(tmp_path / "missing", 10, "thing", "fix", TopologyError)


@pytest.mark.parametrize("argv, match", [
    (["run", "--config", "{fifo}"], "not a run config"),
    (["run", "--topology", "{fifo}"], "not a topology file"),
    (["run", "--key-file", "{fifo}"], "not a transport key file"),
    (["run", "--config", "/dev/zero"], "a character device"),
    (["report", "{fifo}"], "not a run report"),
    (["report", "/dev/zero"], "a character device"),
    (["plan", "--profile", "{fifo}"], "not a probe profile"),
])
def test_a_fifo_or_device_as_an_input_file_is_refused_without_blocking(tmp_path, argv, match):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    res = subprocess.run([sys.executable, "-m", "hpccloud", *(a.format(fifo=fifo) for a in argv)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and match in res.stderr and "Fix:" in res.stderr


def test_deeply_nested_json_report_or_profile_is_refused(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    for argv in (["report", str(deep)], ["plan", "--profile", str(deep)]):
        res = subprocess.run([sys.executable, "-m", "hpccloud", *argv], capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]


@pytest.mark.parametrize("case", ["folder", "fifo", "symlink", "device", "seed", "ranks", "regions"])
def test_simulate_refuses_bad_targets_and_sizes_before_the_work(tmp_path, case):
    """Each was a traceback after the work (targets), a traceback (seed) or an unbounded run."""
    (tmp_path / "target").write_text("keep")
    os.mkfifo(tmp_path / "fifo")
    os.symlink(tmp_path / "target", tmp_path / "link")
    extra, match = {
        "folder": (["--json", str(tmp_path)], "is a folder"),
        "fifo": (["--json", str(tmp_path / "fifo")], "not a regular file"),
        "symlink": (["--json", str(tmp_path / "link")], "is a symbolic link"),
        "device": (["--json", "/dev/full"], "not a regular file"),
        "seed": (["--seed", "-1"], "--seed -1: must be between 0"),
        "ranks": (["--ranks", "100000000"], "--ranks 100000000: must be between 1"),
        "regions": (["--regions", "9"], "--regions 9: must be between 1 and 4"),
    }[case]
    res = subprocess.run([sys.executable, "-m", "hpccloud", "simulate", "--ranks", "4",
                          "--shards", "40", *extra], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert match in res.stderr and "Fix:" in res.stderr and "makespan_s" not in res.stdout
    assert (tmp_path / "target").read_text() == "keep" and os.path.islink(tmp_path / "link")
