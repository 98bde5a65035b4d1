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


_FOLDER_CASES = {
    "log-dir-is-a-file": (["--log-dir", "afile"], "--log-dir afile: is a file"),
    "backup-is-the-checkpoint-dir": (["--checkpoint-dir", "ck", "--checkpoint-every", "1",
                                      "--backup-dir", "eu-north=ck"], "are the same folder"),
    "backup-is-a-file": (["--checkpoint-dir", "ck", "--checkpoint-every", "1",
                          "--backup-dir", "eu-north=afile"], "--backup-dir afile: is a file"),
    "backup-in-no-region": (["--checkpoint-dir", "ck", "--checkpoint-every", "1",
                             "--backup-dir", "mars=bk"], "unknown region 'mars'"),
    "output-is-the-checkpoint-dir": (["--output", "same", "--checkpoint-dir", "same"],
                                     "are the same folder"),
    "checkpoints-inside-output": (["--output", "out", "--checkpoint-dir", "out/ck"],
                                  "--checkpoint-dir out/ck is inside --output out"),
    "empty-key-file": (["--key-file", "", "--output", "out"], "--key-file '': an empty value"),
    "empty-restart": (["--restart", "", "--output", "out"], "--restart '': an empty value"),
    "int-beyond-64-bits": (["--param", "period=100000000000000000000000", "--output", "out"],
                           "does not fit a 64-bit integer"),
    "otf2-trace-is-a-file": (["--trace", "afile.otf2"], "an OTF2 trace is a folder"),
    "otf2-trace-is-another-folder": (["--trace", "adir.otf2"], "not an OTF2 archive"),
}


@pytest.mark.parametrize("case", sorted(_FOLDER_CASES))
def test_folder_and_value_mistakes_are_refused_before_any_folder_is_made(tmp_path, case):
    """Each used to be a traceback at the first checkpoint, a lock error naming this very
    job, a run that ignored the empty flag, or a failure at the output write."""
    (tmp_path / "afile").write_text("x")
    (tmp_path / "afile.otf2").write_text("x")
    (tmp_path / "adir.otf2").mkdir()
    (tmp_path / "adir.otf2" / "mine.txt").write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    args, match = _FOLDER_CASES[case]
    res = run_mpi([*HPCCLOUD, *args], 2, 180, cwd=str(tmp_path),
                  env=child_env(2, {"PYTHONPATH": os.getcwd()}))
    _refused(res, match)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing made, nothing replaced
    assert (tmp_path / "adir.otf2" / "mine.txt").exists()


@pytest.mark.parametrize("doc, match", [
    ({"probe_sizes": []}, "length >= 1"),
    ({"probe_sizes": [0]}, ">= 1"),
    ({"probe_sizes": [-1]}, ">= 1"),
    ({"probe_sizes": [1 << 40]}, "<= 268435456"),
    ({"probe_sizes": list(range(1, 40))}, "length <= 16"),
    ({"output": ""}, "--output '': an empty value"),
    ({"backup_dir": ["eu-north=/b", " "]}, "--backup-dir ' ': an empty value"),
    ({"json": "a\0b"}, "a NUL character"),
])
def test_option_values_that_used_to_reach_the_probe_or_be_ignored_are_refused(doc, match):
    from hpccloud.errors import ConfigError
    from hpccloud.runner.options import config_from_mapping

    with pytest.raises(ConfigError, match="Fix:") as err:
        config_from_mapping(doc, "run.toml").validate("run.toml")
    assert match in str(err.value)


def test_spmv_whose_vector_may_not_reach_every_region_is_refused_before_any_data(tmp_path):
    """spmv gathers the whole vector on every rank; it used to stop at its first step."""
    topo = tmp_path / "t.toml"
    topo.write_text(_AGGREGATES_STAY.replace('[data_classes.public]\nregions = ["*"]',
                                             '[data_classes.public]\nregions = ["eu-north"]'))
    out = tmp_path / "out"
    res = run_mpi([*HPCCLOUD, "--workload", "spmv", "--topology", str(topo), "--output", str(out)],
                  2, 180, env=child_env(2, {"PYTHONPATH": os.getcwd()}))
    _refused(res, "spmv: every rank needs the whole vector")
    assert not out.exists()
