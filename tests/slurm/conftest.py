"""The ``slurm_cluster`` fixture: one real Slurm cluster per test session.

Installing the packages and starting the daemons happen once per session; the
finalizer cancels any job and stops every daemon by the pid in its pid file,
also when the start or a test failed, and fails loudly if a daemon survives.

The tests are skipped only when the cluster cannot exist here (not root, or
neither Slurm nor apt-get present); the skip comes with a warning so it shows
in the summary of every run. Timings (install, bring-up, each job, teardown)
are printed at the end of the run.
"""

from __future__ import annotations

import os
import time
import warnings

import minislurm
import pytest

TIMINGS = minislurm.TIMINGS


def pytest_terminal_summary(terminalreporter):
    if not TIMINGS:
        return
    tr = terminalreporter
    tr.section("Slurm cluster timings")
    for name, seconds in TIMINGS.items():
        tr.write_line(f"  {name:<48} {seconds:7.2f} s")
    # the jobs overlap: count their wall time once, not each job's own time
    total = sum(s for name, s in TIMINGS.items() if not name.startswith("job "))
    tr.write_line(f"  {'Slurm part (install + bring-up + jobs + teardown)':<48} {total:7.2f} s")


@pytest.fixture(scope="session")
def slurm_cluster(request):
    reason = minislurm.cannot_run_reason()
    if reason:
        msg = f"SLURM TESTS NOT RUN: {reason}; the slurm/ templates are untested in this run"
        warnings.warn(msg, UserWarning, stacklevel=1)
        pytest.skip(msg)

    install_s, did = minislurm.install()
    TIMINGS[f"install ({did})"] = install_s

    cluster = minislurm.MiniSlurm(keep=os.environ.get("HPCCLOUD_KEEP_SLURM") == "1")

    def teardown():
        t0 = time.perf_counter()
        problems = cluster.stop()
        TIMINGS["teardown (scancel, stop daemons)"] = time.perf_counter() - t0
        left = cluster.running_pids()
        if problems or left:
            pytest.fail(f"Slurm teardown: {problems}; still running: {left} "
                        f"(files kept in {cluster.root})", pytrace=False)

    # registered before the start, so a half-started cluster is stopped too
    request.addfinalizer(teardown)
    t0 = time.perf_counter()
    try:
        cluster.start()
    except Exception as exc:
        pytest.fail(f"could not bring up Slurm: {exc}\n{cluster.log_tails()}", pytrace=False)
    TIMINGS[f"bring-up (munged, slurmctld, {len(cluster.nodes)} slurmd)"] = time.perf_counter() - t0
    return cluster
