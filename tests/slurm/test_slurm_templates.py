"""The ``slurm/`` templates, submitted with ``sbatch --wait`` to a real Slurm cluster.

The cluster (``conftest.py`` / ``minislurm.py``) runs on this machine with two
slurmd called ``eu-node001`` and ``us-node001``; the jobs use the real
``slurm/regions.example.toml``, whose host patterns put those nodes in
``eu-north`` and ``us-east``. Every job gets ``-N 2 --ntasks-per-node=n/2``, so
half of the ranks must come back in each region — a rank can only land in a
region through its node name, and the machine's host name matches neither
pattern.

Inside the jobs, ``python``, ``mpiexec`` and ``hpccloud`` are those of the venv
running the tests (its ``bin/`` first on PATH); ``srun`` comes from the system.
Every ``sbatch --wait`` has a timeout, after which the job is cancelled.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import pytest
from minislurm import TIMINGS

from hpccloud.cli import COMMANDS

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
SLURM_DIR = REPO / "slurm"
EXAMPLE_TOPOLOGY = SLURM_DIR / "regions.example.toml"
NODE_REGION = {"eu-node001": "eu-north", "us-node001": "us-east"}
JOB_TIMEOUT_S = 150.0


def job_env(**extra: str) -> dict[str, str]:
    """The venv of this test run first on PATH; its Python sees the code under test."""
    venv_bin = os.path.dirname(sys.executable)
    env = {
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/usr/bin",
        "HPCCLOUD_TOPOLOGY": str(EXAMPLE_TOPOLOGY),
        "PYTHONUNBUFFERED": "1",
        # the venv may not be activated: make sure a job cannot pick another one
        "VIRTUAL_ENV": str(Path(venv_bin).parent),
    }
    env.update(extra)
    return env


def submit(cluster, template: str, ntasks: int, tmp_path: Path, label: str, *extra_args: str,
           env: dict[str, str] | None = None):
    """sbatch --wait a template over both nodes; return (job id, slurm output text)."""
    args = ["-N", "2", f"--ntasks-per-node={ntasks // 2}", "-n", str(ntasks), *extra_args]
    res, seconds = cluster.sbatch(SLURM_DIR / template, args, cwd=tmp_path,
                                  env=env or job_env(), timeout_s=JOB_TIMEOUT_S)
    TIMINGS[f"job {label}"] = seconds
    job_id = res.stdout.strip().split(";")[0].splitlines()[0] if res.stdout.strip() else "?"
    outs = sorted(tmp_path.glob(f"hpccloud-*-{job_id}*.out"))
    log = "\n".join(p.read_text(errors="replace") for p in outs)
    assert res.returncode == 0, (
        f"sbatch --wait {template} ({ntasks} tasks) exited {res.returncode}\n"
        f"stderr: {res.stderr}\n--- job output\n{log}\n--- daemons\n{cluster.log_tails()}")
    assert outs, f"no Slurm output file for job {job_id} in {tmp_path}: {os.listdir(tmp_path)}"
    return job_id, log


def check_ranks(ranks: list[dict], ntasks: int) -> None:
    """World size N (not N singletons), block placement over the nodes, regions by node."""
    assert [r["rank"] for r in ranks] == list(range(ntasks)), (
        f"expected a world of {ntasks} ranks, got {ranks} (srun without PMI starts singletons)")
    per_node = ntasks // 2
    hosts = [r["host"] for r in ranks]
    assert hosts == ["eu-node001"] * per_node + ["us-node001"] * per_node, hosts
    for r in ranks:
        assert r["region"] == NODE_REGION[r["host"]], r


def check_probe(doc: dict, ntasks: int) -> None:
    check_ranks(doc["ranks"], ntasks)
    assert doc["provenance"] == "measured"
    assert [reg["name"] for reg in doc["regions"]] == ["eu-north", "us-east"]
    for key in ("alpha_s", "beta_bytes_per_s"):
        m = doc[key]
        assert len(m) == ntasks and all(len(row) == ntasks for row in m), key
        for i, row in enumerate(m):
            for j, v in enumerate(row):
                if i == j:
                    assert v is None, (key, i, j, v)
                else:
                    assert v is not None and math.isfinite(v) and v > 0, (key, i, j, v)
    speeds = doc["speed_units_per_s"]
    assert len(speeds) == ntasks and all(s > 0 for s in speeds), speeds


@pytest.mark.parametrize("ntasks", [2, 4], ids=lambda n: f"n{n}")
@pytest.mark.parametrize("style", ["srun", "mpiexec"])
def test_probe_template(slurm_cluster, tmp_path, style, ntasks):
    job_id, log = submit(slurm_cluster, f"probe-{style}.sbatch", ntasks, tmp_path,
                         f"probe-{style} n={ntasks}")
    # the template's default results folder: $SLURM_SUBMIT_DIR/results/<job id>/
    out = tmp_path / "results" / job_id
    doc = json.loads((out / "probe.json").read_text())
    check_probe(doc, ntasks)
    text = (out / "probe.txt").read_text()
    assert f"hpccloud probe: {ntasks} ranks" in text and "slurm-example" in text, text
    assert f"{ntasks} tasks on eu-node001,us-node001" in log, log


def test_sweep_array_template(slurm_cluster, tmp_path):
    sweep = tmp_path / "sweep.txt"
    sweep.write_text("--sizes 8,65536 --speed-seconds 0.1\n--sizes 8,1048576 --speed-seconds 0.1\n")
    env = job_env(HPCCLOUD_SWEEP_COMMAND="probe", HPCCLOUD_SWEEP_FILE=str(sweep),
                  HPCCLOUD_RESULTS=str(tmp_path / "sweep-results"))
    job_id, log = submit(slurm_cluster, "sweep-array.sbatch", 2, tmp_path, "sweep-array 2x2 tasks",
                         "--array=0-1", env=env)
    for task, sizes in ((0, [8, 65536]), (1, [8, 1048576])):
        out = tmp_path / "sweep-results" / job_id / str(task)
        doc = json.loads((out / "result.json").read_text())
        check_probe(doc, 2)
        assert doc["sizes_bytes"] == sizes, (task, doc["sizes_bytes"])
        assert (out / "args.txt").read_text().startswith(f"--sizes {','.join(map(str, sizes))}")


def test_srun_without_pmi_fails_loudly(slurm_cluster, tmp_path):
    """The trap the templates avoid: srun --mpi=none starts singletons; hpccloud must refuse."""
    t0 = time.perf_counter()
    res, seconds = slurm_cluster.sbatch(
        None, ["-N", "2", "--ntasks-per-node=1", "-o", "nopmi-%j.out",
             "--wrap", "srun --mpi=none hpccloud info"],
        cwd=tmp_path, env=job_env(), timeout_s=JOB_TIMEOUT_S)
    TIMINGS["job srun --mpi=none (must fail)"] = time.perf_counter() - t0
    log = "\n".join(p.read_text() for p in tmp_path.glob("nopmi-*.out"))
    assert res.returncode != 0, f"a job of singletons passed as success:\n{log}"
    assert "srun started 2 tasks, but MPI sees a world of 1 rank" in log, log
    assert "--mpi=pmi2" in log


def _needs(command: str):
    return pytest.mark.skipif(command not in COMMANDS,
                              reason=f"`hpccloud {command}` has not landed yet; its template "
                                     f"is written but not run")


@_needs("run")
@pytest.mark.parametrize("ntasks", [2, 4], ids=lambda n: f"n{n}")
@pytest.mark.parametrize("style", ["srun", "mpiexec"])
def test_run_template(slurm_cluster, tmp_path, style, ntasks):
    job_id, log = submit(slurm_cluster, f"run-{style}.sbatch", ntasks, tmp_path,
                         f"run-{style} n={ntasks}")
    doc = json.loads((tmp_path / "results" / job_id / "report.json").read_text())
    check_ranks(doc["ranks"], ntasks)


@_needs("bench")
@pytest.mark.parametrize("style", ["srun", "mpiexec"])
def test_bench_template(slurm_cluster, tmp_path, style):
    job_id, log = submit(slurm_cluster, f"bench-{style}.sbatch", 2, tmp_path, f"bench-{style} n=2")
    out = tmp_path / "results" / job_id
    for node in NODE_REGION:
        assert json.loads((out / f"kernels-{node}.json").read_text()), node
    check_probe(json.loads((out / "probe.json").read_text()), 2)
