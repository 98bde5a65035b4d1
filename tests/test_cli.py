"""The ``hpccloud`` command as users launch it: ``mpiexec -n N hpccloud …`` with timeouts."""

import json
import os
import subprocess
import sys

import pytest

from hpccloud.testing.mpi_pytest import run_mpi

HPCCLOUD = [sys.executable, "-m", "hpccloud"]


def _ok(res):
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


@pytest.mark.parametrize("nranks", [1, 4])
def test_probe_writes_the_profile(nranks, tmp_path):
    out = tmp_path / "p.json"
    res = _ok(run_mpi([*HPCCLOUD, "probe", "--json", str(out), "--sizes", "8,65536,1048576",
                       "--speed-seconds", "0.1"], nranks, 180))
    doc = json.loads(out.read_text())
    assert len(doc["alpha_s"]) == nranks and all(len(r) == nranks for r in doc["beta_bytes_per_s"])
    assert [r["rank"] for r in doc["ranks"]] == list(range(nranks))
    assert all(doc["alpha_s"][i][i] is None for i in range(nranks))
    assert all(x is not None and x > 0 for i, row in enumerate(doc["beta_bytes_per_s"])
               for j, x in enumerate(row) if i != j)
    assert len(doc["speed_units_per_s"]) == nranks and min(doc["speed_units_per_s"]) > 0
    assert doc["provenance"] == "measured"
    assert "speed (stencil2d" in res.stdout
    if nranks > 1:
        assert "bandwidth beta [GB/s]" in res.stdout and "by region" in res.stdout


def test_main_job_runs_and_reports(tmp_path):
    rep_path = tmp_path / "report.json"
    res = _ok(run_mpi([*HPCCLOUD, "run", "--param", "n=256", "--steps", "12", "--rebalance-every",
                       "4", "--json", str(rep_path), "--plots", str(tmp_path / "plots"),
                       "--output", str(tmp_path / "out")], 4, 300))
    assert "hpccloud run: workload stencil2d on 4 ranks" in res.stdout
    assert "predicted" in res.stdout and "achieved" in res.stdout
    assert "rank speeds planned on: the windows' deviations from the speed probe's kept at" in res.stdout
    rep = json.loads(rep_path.read_text())
    assert len(rep["steps"]) == 12 and len(rep["plans"]) == 2
    assert all(len(s["busy_s"]) == 4 for s in rep["steps"])
    for name in ("links.png", "load.png", "timeline.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 1000
    assert sorted(os.listdir(tmp_path / "out")) == [".hpccloud.lock", "catalogue.h5", "catalogue.xmf",
                                                    "eu-north.h5", "manifest.json", "us-east.h5"]
    from hpccloud.io.publish import verify_output

    assert verify_output(str(tmp_path / "out"))["step"] == 12  # whole, and this run's
    # `hpccloud report` renders the plots again from the JSON alone
    again = subprocess.run([*HPCCLOUD, "report", str(rep_path), "--out", str(tmp_path / "again")],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again" / "timeline.png").exists()


BAD_RUNS = [
    (["run", "--param", "bogus=1"], "unknown parameter 'bogus'"),
    (["run", "--steps", "0"], "--steps: expected `int` >= 1 (value 0)"),
    (["run", "--param", "n=abc"], "parameter n='abc' is not an integer"),
    (["run", "--restart", "/nonexistent/ckpt"], "--restart /nonexistent/ckpt: no such file"),
    (["probe", "--sizes", "8,x"], "--sizes '8,x': not a comma-separated list"),
    (["info", "--topology", "/nonexistent.toml"], "/nonexistent.toml: cannot read the topology file"),
]


@pytest.mark.parametrize("args,message", BAD_RUNS, ids=[a[0] + "-" + a[-1][:12] for a, _ in BAD_RUNS])
def test_bad_input_one_clear_message_exit_2(args, message, tmp_path):
    res = run_mpi([*HPCCLOUD, *args], 3, 120)
    assert res.returncode == 2, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    assert res.stderr.count(message) == 1, res.stderr  # printed once, by rank 0
    assert "Traceback" not in res.stderr
    assert "Fix:" in res.stderr or "error:" in res.stderr


def test_bad_topology_file_exit_2_once(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[regions]]\nname = "a"\njurisdiction = "EU"\nprice_per_core_hour = 1\n'
                   'ranks = [0, 1]\n[[regions]]\nname = "b"\njurisdiction = "US"\n'
                   'price_per_core_hour = 1\nranks = [1]\n')
    res = run_mpi([*HPCCLOUD, "probe", "--topology", str(bad)], 2, 120)
    assert res.returncode == 2
    assert res.stderr.count("rank 1 is in two regions") == 1
    assert f"{bad}: regions[1].ranks" in res.stderr


MPMD_MISMATCHES = [
    (["run", "--steps", "30", "--json", "{tmp}/r.json"], ["run", "--steps", "20"],
     "steps = 30 on rank 0, 20 on rank 1"),
    (["probe", "--sizes", "8"], ["probe", "--sizes", "16"], "sizes = '8' on rank 0, '16' on rank 1"),
    # a collective switched on by the environment on one rank only
    (["-env", "HPCCLOUD_CHECK_RESIDENCY_EVERY_STEP", "1", "run"], ["run"],
     "HPCCLOUD_CHECK_RESIDENCY_EVERY_STEP = '1' on rank 0, None on rank 1"),
]


@pytest.mark.parametrize("first,rest,message", MPMD_MISMATCHES, ids=["run", "probe", "env"])
def test_ranks_started_with_different_options_are_refused_not_left_hanging(first, rest, message, tmp_path):
    # an MPMD launch (`A : B`) whose parts differ ran different loops that waited for each
    # other until the job was killed
    from hpccloud.testing.mpi_pytest import (
        child_env,
        launcher_flavour,
        mpiexec_argv,
        mpiexec_path,
        run_group,
    )

    first = [a.format(tmp=tmp_path) for a in first]
    env_flags = first[:3] if first[0] == "-env" else []  # Hydra's per-part environment
    first = first[len(env_flags):]
    if env_flags and launcher_flavour(mpiexec_path()) == "openmpi":
        env_flags = ["-x", "=".join(env_flags[1:])]
    argv = [*mpiexec_argv(1), *env_flags, *HPCCLOUD, *first, ":", "-n", "2", *HPCCLOUD, *rest]
    res = run_group(argv, 120, env=child_env(3))
    assert res.returncode == 2, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    assert res.stderr.count("the ranks were started with different settings") == 1, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert not list(tmp_path.iterdir())  # refused before any work: no report


def test_python_dash_m_and_help():
    res = subprocess.run([*HPCCLOUD, "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    for cmd in ("run", "probe", "info", "report"):
        assert cmd in res.stdout


def test_job_env_names_the_variables_the_modules_read():
    # the settings check compares these; a renamed variable would drop out of it silently
    from hpccloud.comm.transport import VERIFY_ENV
    from hpccloud.commands.run import JOB_ENV
    from hpccloud.runner.checkpointing import SYNC_ENV
    from hpccloud.runner.loop import CHECK_EVERY_STEP_ENV

    assert set(JOB_ENV) == {VERIFY_ENV, SYNC_ENV, CHECK_EVERY_STEP_ENV}
