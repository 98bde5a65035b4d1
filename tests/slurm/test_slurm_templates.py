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

All jobs are submitted at once (one ``sbatch --wait`` per job, in threads) the
first time a test asks for its job, and Slurm runs them side by side as far as
the declared CPUs allow: a job mostly waits (for the scheduler, for sbatch's
2-second polls, for imports), so overlapping them keeps the whole Slurm part
near the time of the slowest jobs rather than their sum. Each test then checks
its own job.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from minislurm import TIMINGS

from hpccloud.cli import COMMANDS

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
SLURM_DIR = REPO / "slurm"
EXAMPLE_TOPOLOGY = SLURM_DIR / "regions.example.toml"
NODE_REGION = {"eu-node001": "eu-north", "us-node001": "us-east"}
#: per sbatch --wait, queueing included (jobs wait for each other's CPUs)
JOB_TIMEOUT_S = 300.0
#: light probe settings: the templates are under test here, not the network
PROBE_ARGS = "--sizes 8,65536 --speed-seconds 0.1"
#: Slurm 22.05's pmi2 plugin reads the PMI-1 requests the mpich wheel sends (long
#: "cmd=put ... -allgather-...-seg-k/n" lines) and, rarely and under load, parses a
#: partial read as a request: the step then aborts (UCX gets a garbled address) or
#: hangs in the fence. Seen 2 times in about 60 srun launches on this machine. A job
#: that shows this exact message is resubmitted once, with a warning.
PMI2_PARSER_BUG = "mpi/pmi2: value not properly terminated in client request"
#: Slurm's own time limit per job (minutes): a hung step is ended by Slurm itself
JOB_TIME_LIMIT_MIN = 4
RUN_ARGS = ("--workload stencil2d --param n=96 --param grid=4 --steps 4 --rebalance-every 2 "
            "--balancer topo --quiet")


def job_env(**extra: str) -> dict[str, str]:
    """The venv of this test run first on PATH; its Python sees the code under test."""
    venv_bin = os.path.dirname(sys.executable)
    env = {
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/usr/bin",
        "HPCCLOUD_TOPOLOGY": str(EXAMPLE_TOPOLOGY),
        "HPCCLOUD_PROBE_ARGS": PROBE_ARGS,
        "PYTHONUNBUFFERED": "1",
        # the venv may not be activated: make sure a job cannot pick another one
        "VIRTUAL_ENV": str(Path(venv_bin).parent),
    }
    env.update(extra)
    return env


@dataclass
class Job:
    """One sbatch --wait submission and, once done, what came of it."""

    label: str
    script: Path | None            # None: --wrap in args
    args: list[str]
    env: dict[str, str]
    cwd: Path
    returncode: int | None = None
    job_id: str = "?"
    stderr: str = ""
    log: str = ""
    seconds: float = 0.0
    error: BaseException | None = None

    def run(self, cluster) -> Job:
        self._submit(cluster)
        if PMI2_PARSER_BUG in self.log:
            msg = (f"{self.label}: job {self.job_id} hit the Slurm pmi2 parser bug "
                   f"({PMI2_PARSER_BUG!r}); resubmitted once")
            warnings.warn(msg, UserWarning, stacklevel=1)
            TIMINGS[f"job {self.label} (first try, pmi2 parser bug)"] = self.seconds
            self.error, self.returncode, self.job_id = None, None, "?"
            self._submit(cluster)
        return self

    def _submit(self, cluster) -> None:
        t0 = time.perf_counter()
        try:
            res, self.seconds = cluster.sbatch(self.script, self.args, cwd=self.cwd, env=self.env,
                                               timeout_s=JOB_TIMEOUT_S)
        except BaseException as exc:  # reported by the test that owns the job
            self.error, self.seconds = exc, time.perf_counter() - t0
            self.log = self._read_logs("*.out")
            return
        self.returncode, self.stderr = res.returncode, res.stderr
        if res.stdout.strip():
            self.job_id = res.stdout.strip().splitlines()[0].split(";")[0]
        # hpccloud-<name>-<id>.out, nopmi-<id>.out, and <name>-<array id>_<task>.out
        self.log = self._read_logs(f"*-{self.job_id}.out", f"*-{self.job_id}_*.out")

    def _read_logs(self, *patterns: str) -> str:
        files = sorted({p for pattern in patterns for p in self.cwd.glob(pattern)})
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')}" for p in files)

    def check_ok(self, cluster) -> None:
        if self.error is not None:
            raise AssertionError(f"{self.label}: {self.error!r}\n"
                                 f"{getattr(self.error, 'stderr', '')}\n--- job output\n{self.log}\n"
                                 f"--- daemons\n{cluster.log_tails()}") from self.error
        assert self.returncode == 0, (
            f"{self.label}: sbatch --wait exited {self.returncode}\nstderr: {self.stderr}\n"
            f"--- job output\n{self.log}\n--- daemons\n{cluster.log_tails()}")
        assert self.log, f"{self.label}: no Slurm output file in {self.cwd}: {os.listdir(self.cwd)}"


def template_job(label, template, ntasks, folder, *extra, **env) -> Job:
    """A template over both nodes: -N 2, ntasks/2 per node."""
    folder.mkdir(parents=True)
    args = ["-N", "2", f"--ntasks-per-node={ntasks // 2}", "-n", str(ntasks),
            f"--time={JOB_TIME_LIMIT_MIN}", *extra]
    return Job(label, SLURM_DIR / template, args, job_env(**env), folder)


def all_jobs(root: Path) -> dict[str, Job]:
    """Every job of this module, by test id."""
    jobs = {}
    for style in ("srun", "mpiexec"):
        for n in (2, 4):
            jobs[f"probe-{style}-n{n}"] = template_job(
                f"probe-{style} n={n}", f"probe-{style}.sbatch", n, root / f"probe-{style}-{n}")
            if "run" in COMMANDS:
                jobs[f"run-{style}-n{n}"] = template_job(
                    f"run-{style} n={n}", f"run-{style}.sbatch", n, root / f"run-{style}-{n}",
                    HPCCLOUD_RUN_ARGS=RUN_ARGS)
        if "bench" in COMMANDS:
            jobs[f"bench-{style}"] = template_job(
                f"bench-{style} n=2", f"bench-{style}.sbatch", 2, root / f"bench-{style}",
                HPCCLOUD_BENCH_ARGS="--kernels triad,stencil2d --scale 0.01 --repeats 2")
    sweep_dir = root / "sweep"
    jobs["sweep"] = template_job(
        "sweep-array 2 tasks x n=2", "sweep-array.sbatch", 2, sweep_dir, "--array=0-1",
        HPCCLOUD_SWEEP_COMMAND="probe", HPCCLOUD_SWEEP_FILE=str(sweep_dir / "sweep.txt"),
        HPCCLOUD_RESULTS=str(sweep_dir / "sweep-results"))
    (root / "nopmi").mkdir()
    jobs["nopmi"] = Job("srun --mpi=none (must fail)", None,
                        ["-N", "2", "--ntasks-per-node=1", "-o", "nopmi-%j.out",
                         "--wrap", "srun --mpi=none hpccloud info"], job_env(), root / "nopmi")
    return jobs


@pytest.fixture(scope="module")
def jobs(slurm_cluster, tmp_path_factory):
    """Submit every job at once, wait for all; record each job's wall time."""
    root = tmp_path_factory.mktemp("slurm-jobs")
    todo = all_jobs(root)
    (root / "sweep" / "sweep.txt").write_text(
        "--sizes 8,65536 --speed-seconds 0.1\n--sizes 8,1048576 --speed-seconds 0.1\n")
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(todo)) as pool:
        done = dict(zip(todo, pool.map(lambda j: j.run(slurm_cluster), todo.values()), strict=True))
    for job in done.values():
        TIMINGS[f"job {job.label}"] = job.seconds
    TIMINGS[f"all {len(done)} jobs, side by side (wall)"] = time.perf_counter() - t0
    return done


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
                    # a Hockney fit may put alpha at 0 (clamped); beta must be a rate
                    assert v is not None and math.isfinite(v) and v >= 0, (key, i, j, v)
                    assert key == "alpha_s" or v > 0, (key, i, j, v)
    speeds = doc["speed_units_per_s"]
    assert len(speeds) == ntasks and all(s > 0 for s in speeds), speeds


@pytest.mark.parametrize("ntasks", [2, 4], ids=lambda n: f"n{n}")
@pytest.mark.parametrize("style", ["srun", "mpiexec"])
def test_probe_template(slurm_cluster, jobs, style, ntasks):
    job = jobs[f"probe-{style}-n{ntasks}"]
    job.check_ok(slurm_cluster)
    # the template's default results folder: $SLURM_SUBMIT_DIR/results/<job id>/
    out = job.cwd / "results" / job.job_id
    doc = json.loads((out / "probe.json").read_text())
    check_probe(doc, ntasks)
    assert doc["sizes_bytes"] == [8, 65536], "HPCCLOUD_PROBE_ARGS did not reach the probe"
    text = (out / "probe.txt").read_text()
    assert f"hpccloud probe: {ntasks} ranks" in text and "slurm-example" in text, text
    assert f"{ntasks} tasks on eu-node001,us-node001" in job.log, job.log


def test_sweep_array_template(slurm_cluster, jobs):
    job = jobs["sweep"]
    job.check_ok(slurm_cluster)
    for task, sizes in ((0, [8, 65536]), (1, [8, 1048576])):
        out = job.cwd / "sweep-results" / job.job_id / str(task)
        doc = json.loads((out / "result.json").read_text())
        check_probe(doc, 2)
        assert doc["sizes_bytes"] == sizes, (task, doc["sizes_bytes"])
        assert (out / "args.txt").read_text().startswith(f"--sizes {','.join(map(str, sizes))}")


def test_srun_without_pmi_fails_loudly(slurm_cluster, jobs):
    """The trap the templates avoid: srun --mpi=none starts singletons; hpccloud must refuse."""
    job = jobs["nopmi"]
    assert job.error is None, repr(job.error)
    assert job.returncode != 0, f"a job of singletons passed as success:\n{job.log}"
    assert "srun started 2 tasks, but MPI sees a world of 1 rank" in job.log, job.log
    assert "--mpi=pmi2" in job.log


def _needs(command: str):
    return pytest.mark.skipif(command not in COMMANDS,
                              reason=f"`hpccloud {command}` has not landed yet; its template "
                                     f"is written but not run")


@_needs("run")
@pytest.mark.parametrize("ntasks", [2, 4], ids=lambda n: f"n{n}")
@pytest.mark.parametrize("style", ["srun", "mpiexec"])
def test_run_template(slurm_cluster, jobs, style, ntasks):
    job = jobs[f"run-{style}-n{ntasks}"]
    job.check_ok(slurm_cluster)
    out = job.cwd / "results" / job.job_id
    doc = json.loads((out / "report.json").read_text())
    assert doc["kind"] == "hpccloud-run" and doc["ranks"] == ntasks, (doc["kind"], doc["ranks"])
    check_ranks(doc["topology"]["ranks"], ntasks)
    assert doc["config"]["workload"] == "stencil2d" and len(doc["steps"]) == 4, "RUN_ARGS lost"
    # the per-region HDF5 output went into the job's folder, one file per region
    assert Path(doc["output"]["catalogue"]).parent == out / "output", doc["output"]
    assert sorted(p.name for p in (out / "output").glob("*.h5") if p.name != "catalogue.h5") \
        == ["eu-north.h5", "us-east.h5"], os.listdir(out / "output")


@_needs("bench")
@pytest.mark.parametrize("style", ["srun", "mpiexec"])
def test_bench_template(slurm_cluster, jobs, style):
    job = jobs[f"bench-{style}"]
    job.check_ok(slurm_cluster)
    out = job.cwd / "results" / job.job_id
    for node in NODE_REGION:
        doc = json.loads((out / f"kernels-{node}.json").read_text())
        rows, prov = doc["results"], doc["provenance"]
        assert {r["kernel"] for r in rows} == {"triad", "stencil2d"}, (node, rows)
        assert all(r["units_per_s"] > 0 for r in rows), (node, rows)
        # the kernels ran with the threads the allocation gives: --exclusive gives the
        # whole node, the step asks for all its CPUs, task/affinity binds it to them
        env = prov["environment"]
        assert env["SLURMD_NODENAME"] == node and env["SLURM_JOB_ID"] == job.job_id, env
        allocated = slurm_cluster.cpus_per_node  # --exclusive: every CPU of the node
        # the step asked for them: --cpus-per-task=$SLURM_CPUS_ON_NODE
        assert int(env["SLURM_CPUS_PER_TASK"]) == allocated, env
        assert {r["threads"] for r in rows} == {allocated}, (node, rows)
        assert prov["threads"] == allocated and prov["machine"]["cpus_available"] == allocated, prov
    check_probe(json.loads((out / "probe.json").read_text()), 2)
