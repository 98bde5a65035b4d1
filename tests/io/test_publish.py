"""Output folders: locked, debris removed, another run refused, manifest last, readers check."""

import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from hpccloud.errors import ChecksumError, ConfigError
from hpccloud.io.atomic import atomic_path
from hpccloud.io.debris import find_debris, is_debris
from hpccloud.io.publish import (
    MANIFEST,
    begin_replace,
    claim_folder,
    publish,
    verify_output,
)


def _h5(path, run_id, step, value=1.0):
    with atomic_path(path, ".h5") as tmp, h5py.File(tmp, "w") as f:
        f["x"] = np.full(4, value)
        f.attrs["run_id"] = run_id
        f.attrs["step"] = step


def _run(folder, run_id, step, names, overwrite=False, value=1.0):
    lock = claim_folder(str(folder), run_id, overwrite=overwrite)
    try:
        begin_replace(str(folder))
        for n in names:
            _h5(folder / n, run_id, step, value)
        return publish(str(folder), run_id, step, "cfg", names, lock.previous)
    finally:
        lock.release()


def test_publish_and_verify(tmp_path):
    out = tmp_path / "out"
    m = _run(out, "run1", 10, ["eu.h5", "catalogue.h5"])
    assert verify_output(str(out))["run_id"] == "run1" and set(m["files"]) == {"eu.h5", "catalogue.h5"}
    # a changed byte, a foreign file, a missing manifest: all refused by name
    with open(out / "eu.h5", "r+b") as fh:
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 1]))
    with pytest.raises(ChecksumError, match="eu.h5: differs from the file run run1 wrote"):
        verify_output(str(out))


def test_another_run_refused_unless_overwrite_and_stale_files_go(tmp_path):
    out = tmp_path / "out"
    _run(out, "run1", 10, ["eu.h5", "us.h5", "catalogue.h5"])
    with pytest.raises(ConfigError, match=r"holds the results of run run1 \(step 10.*--overwrite"):
        claim_folder(str(out), "run2")
    _run(out, "run2", 20, ["eu.h5", "catalogue.h5"], overwrite=True, value=2.0)
    assert sorted(os.listdir(out)) == [".hpccloud.lock", "catalogue.h5", "eu.h5", MANIFEST]
    assert verify_output(str(out))["step"] == 20


def test_crash_mid_replace_reads_as_incomplete(tmp_path):
    out = tmp_path / "out"
    _run(out, "run1", 10, ["eu.h5", "catalogue.h5"])
    lock = claim_folder(str(out), "run2", overwrite=True)
    begin_replace(str(out))
    _h5(out / "eu.h5", "run2", 20)  # ... and the job dies before the catalogue and manifest
    lock.release()
    with pytest.raises(ChecksumError, match="no manifest.json: not a complete hpccloud output"):
        verify_output(str(out))


def test_unlisted_or_foreign_h5_refused(tmp_path):
    out = tmp_path / "out"
    _run(out, "run1", 10, ["eu.h5"])
    _h5(out / "extra.h5", "other", 3)
    with pytest.raises(ChecksumError, match="extra.h5 is not part of run run1"):
        verify_output(str(out))


def test_targets_that_are_files_or_foreign_folders(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="--output .*/f: is a file, not a folder"):
        claim_folder(str(tmp_path / "f"), "r")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("x")
    with pytest.raises(ConfigError, match=r"holds 1 entries of another run or program \(thesis.tex\)"):
        claim_folder(str(tmp_path / "home"), "r")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    with pytest.raises(ConfigError, match="cannot create or lock the folder"):
        claim_folder(str(ro), "r")


def test_two_jobs_one_folder(tmp_path):
    """A second process is refused while the first holds the folder; free once it ends."""
    out = tmp_path / "out"
    code = textwrap.dedent(f"""
        import sys, time
        from hpccloud.io.publish import claim_folder
        claim_folder({str(out)!r}, "first", results=False)
        print("locked", flush=True)
        sys.stdin.read()
    """)
    first = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert first.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=rf"in use by another hpccloud job \(pid {first.pid} on .*run first"):
            claim_folder(str(out), "second", flag="--checkpoint-dir", results=False)
    finally:
        first.stdin.close()
        first.wait(timeout=30)
    claim_folder(str(out), "second", results=False).release()  # the kernel dropped the dead job's lock


def test_debris_removed_by_name_only(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".eu.h5.abc123_x.h5.tmp").write_bytes(b"x" * 1000)       # atomic_path temp
    (out / ".report.json.k2j4h5g6.tmp").write_text("{")
    (out / ".step-00000020.0123abcd.tmp").mkdir()                      # checkpoint temp folder
    (out / ".step-00000020.0123abcd.tmp" / "rank-00000.h5").write_bytes(b"y" * 5000)
    (out / "step-00000010.old-89abcdef").mkdir()
    keep = [".bashrc", "notes.tmp", ".hidden.tmp", "step-00000010", ".hpccloud.lock"]
    for k in keep[:-2]:
        (out / k).write_text("keep")
    (out / "step-00000010").mkdir()
    assert not any(is_debris(k) for k in keep)
    assert len(find_debris(str(out))) == 4
    claim_folder(str(out), "r", results=False).release()
    assert sorted(os.listdir(out)) == sorted(keep)


def test_atomic_temp_names_are_recognised(tmp_path):
    seen = []
    for name, suffix in (("eu-north.h5", ".h5"), ("report.json", ""), ("a", ".json")):
        with atomic_path(tmp_path / name, suffix) as tmp:
            seen.append(os.path.basename(tmp))
            open(tmp, "w").close()
    assert all(is_debris(n) for n in seen), seen


def test_read_catalogue_checks_the_published_folder_whole(tmp_path):
    """A reader of a run's output sees the whole run or an error, never a mix of runs."""
    import sys

    import h5py

    from hpccloud.errors import ChecksumError
    from hpccloud.io.hdf5 import read_catalogue
    from hpccloud.testing.mpi_pytest import run_mpi

    out = tmp_path / "out"
    res = run_mpi([sys.executable, "-m", "hpccloud", "run", "--steps", "2", "--param", "n=64",
                   "--param", "grid=4", "--quiet", "--output", str(out)], 2, 180)
    assert res.returncode == 0, res.stderr
    cat = out / "catalogue.h5"
    assert read_catalogue(cat).shape == (64, 64)
    # a region file changed after publication: refused, naming the file
    victim = next(p for p in out.glob("*.h5") if p.name != "catalogue.h5")
    with h5py.File(victim, "r+") as f:
        f.attrs["touched"] = 1
    with pytest.raises(ChecksumError, match=victim.name):
        read_catalogue(cat)
    # the manifest gone (a run that crashed before publishing): refused
    (out / "manifest.json").unlink()
    with pytest.raises(ChecksumError, match="did not finish"):
        read_catalogue(cat)
    assert read_catalogue(cat, verify=False).shape == (64, 64)


@pytest.mark.parametrize("text", ["{not json", '{"format": "someone-else", "files": {}}', "[]"])
def test_a_foreign_or_damaged_manifest_is_bad_input_and_overwrite_replaces_it(tmp_path, text):
    """It used to be a ChecksumError (exit 1) telling to rerun with --overwrite, which then
    failed the same way."""
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text(text)
    with pytest.raises(ConfigError, match=r"--output .*manifest.json.*--overwrite"):
        claim_folder(str(out), "a" * 32)
    lock = claim_folder(str(out), "a" * 32, overwrite=True)
    try:
        assert lock.previous is None
        _h5(out / "r.h5", "a" * 32, 3)
        begin_replace(str(out))
        publish(str(out), "a" * 32, 3, "d" * 64, ["r.h5"])
        assert verify_output(str(out))["run_id"] == "a" * 32
    finally:
        lock.release()
