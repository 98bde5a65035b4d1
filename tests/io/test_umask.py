"""Outputs honour the umask: colleagues can read results under 022, nobody else under 077.

Atomic writes used ``tempfile.mkstemp`` (always 0600); they now create the temp
file with 0666 filtered by the umask, like ``open(path, "w")``. Checked on the
helpers and end to end on a real ``hpccloud run`` (report JSON, plots, HDF5
per region, checkpoint folder and manifest).
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from hpccloud.io.atomic import atomic_path, write_bytes_atomic
from hpccloud.testing.mpi_pytest import child_env, run_mpi


@pytest.fixture(params=[0o022, 0o077], ids=lambda m: f"umask{m:03o}")
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_honour_umask(umask, tmp_path):
    target = tmp_path / "a.json"
    write_bytes_atomic(target, b"{}")
    assert _mode(target) == 0o666 & ~umask
    # replacing a file keeps the guarantee (a new temp file each time)
    write_bytes_atomic(target, b"[]")
    assert target.read_bytes() == b"[]" and _mode(target) == 0o666 & ~umask
    import h5py

    h5 = tmp_path / "x.h5"
    with atomic_path(h5, ".h5") as tmp, h5py.File(tmp, "w") as f:
        f["x"] = [1, 2, 3]
    assert _mode(h5) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "x.h5"]  # no temp left


def test_atomic_write_failure_leaves_nothing(umask, tmp_path):
    target = tmp_path / "b.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        Path(tmp).write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["b.txt"]


def test_run_outputs_honour_umask(umask, tmp_path):
    """Every file and folder a real run writes: 0644/0755 under 022, 0600/0700 under 077."""
    out = tmp_path / "res"
    out.mkdir()  # under the umask, like a user's `mkdir`
    res = run_mpi([sys.executable, "-m", "hpccloud", "run", "--param", "n=64", "--steps", "4",
                   "--rebalance-every", "2", "--quiet", "--json", str(out / "report.json"),
                   "--plots", str(out / "plots"), "--output", str(out / "h5"),
                   "--checkpoint-every", "2", "--checkpoint-dir", str(out / "ckpt")],
                  2, 240, env=child_env(2))
    assert res.returncode == 0, res.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    folders = [p for p in out.rglob("*") if p.is_dir()]
    names = {p.name for p in files}
    assert {"report.json", "timeline.png", "catalogue.h5", "manifest.json"} <= names, names
    wrong = [(str(p.relative_to(out)), oct(_mode(p))) for p in files if _mode(p) != 0o666 & ~umask]
    wrong += [(str(p.relative_to(out)), oct(_mode(p))) for p in folders
              if _mode(p) != 0o777 & ~umask]
    assert not wrong, f"umask {umask:03o}: {wrong}"
