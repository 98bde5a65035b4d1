"""A pytest plugin that runs marked tests under real ``mpiexec``.

Mark a test with ``@pytest.mark.hpccloud_mpi(ranks=[1, 2, 3, 4], timeout=60)``. The test
is parametrised by rank count (ids ``np1`` … ``np4``); each case is relaunched as

    mpiexec -n N python -m pytest <this test's node id> -p hpccloud.testing.mpi_pytest

with ``HPCCLOUD_MPI_CHILD=1``. Inside the child every rank runs the test body
(the ``comm`` fixture gives ``MPI.COMM_WORLD``). Each rank writes its outcome to
a file; a rank whose test fails writes its message and then calls
``MPI.COMM_WORLD.Abort`` so no peer waits forever in a collective (what
``python -m mpi4py`` does). The parent kills the whole process group when the
timeout expires, and fails the test with the failing rank's message.

To run one MPI test by hand::

    HPCCLOUD_MPI_CHILD=1 mpiexec -n 3 python -m pytest "tests/test_probe.py::test_link_probe[np3]"
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

CHILD_ENV = "HPCCLOUD_MPI_CHILD"
RESULT_DIR_ENV = "HPCCLOUD_MPI_RESULT_DIR"
DEFAULT_TIMEOUT_S = 120


def in_child() -> bool:
    return os.environ.get(CHILD_ENV) == "1"


MPIEXEC_ENV = "HPCCLOUD_MPIEXEC"


def mpiexec_path() -> str:
    """The launcher the tests use.

    ``$HPCCLOUD_MPIEXEC`` if set (a site MPI, e.g. ``mpiexec.openmpi``), else the
    ``mpiexec`` beside this Python (the mpich wheel puts it there), else PATH's.
    """
    if os.environ.get(MPIEXEC_ENV):
        return os.environ[MPIEXEC_ENV]
    here = Path(sys.executable).with_name("mpiexec")
    return str(here) if here.exists() else "mpiexec"


@functools.lru_cache(maxsize=8)
def launcher_flavour(mpiexec: str) -> str:
    """``"openmpi"``, ``"mpich"`` (Hydra) or ``"unknown"``, from ``mpiexec --version``."""
    from hpccloud.mpiinfo import launcher_version_text, mpi_kind

    return mpi_kind(launcher_version_text(mpiexec))


def mpiexec_argv(nranks: int, mpiexec: str | None = None) -> list[str]:
    """``mpiexec -n N`` plus what this launcher needs to behave like MPICH's Hydra here.

    Open MPI refuses more ranks than cores (``--oversubscribe`` lifts it) and binds
    ranks to cores by default where Hydra binds nothing (``--bind-to none`` keeps the
    affinity-based core groups the same on both); as root it needs
    ``--allow-run-as-root``.
    """
    mpiexec = mpiexec or mpiexec_path()
    argv = [mpiexec, "-n", str(nranks)]
    if launcher_flavour(mpiexec) == "openmpi":
        argv[1:1] = ["--oversubscribe", "--bind-to", "none"]
        if os.geteuid() == 0:
            argv[1:1] = ["--allow-run-as-root"]
    return argv


def child_env(nranks: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for an MPI child: one Numba thread per rank when ranks >= cores."""
    env = dict(os.environ)
    env[CHILD_ENV] = "1"
    cores = len(os.sched_getaffinity(0))
    env.setdefault("NUMBA_NUM_THREADS", str(max(1, cores // nranks)))
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    # the checkout root first, so the children import the code under test
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    if extra:
        env.update(extra)
    return env


def json_records(text: str) -> list[dict]:
    """Every JSON object the ranks printed, even when two ranks' lines ran together.

    The launcher forwards each rank's output as it comes; with
    ``PYTHONUNBUFFERED`` a ``print`` is two writes (the text, then the newline),
    so one rank's object can land on the end of another's line. Objects are
    read where they start, not line by line.

    >>> json_records('noise\\n{"rank": 1}{"rank": 0}\\n\\n')
    [{'rank': 1}, {'rank': 0}]
    """
    decoder = json.JSONDecoder()
    out, i = [], 0
    while (i := text.find("{", i)) >= 0:
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            i += 1
            continue
        if isinstance(obj, dict):
            out.append(obj)
        i = end
    return out


def run_group(argv: list[str], timeout_s: float, env: dict[str, str] | None = None,
              cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run ``argv`` in its own process group with a hard timeout.

    On expiry (or an interrupt) the whole group — launcher and ranks — is
    killed; a timeout raises ``subprocess.TimeoutExpired`` with the output so far.
    """
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(argv, timeout_s, output=out, stderr=err) from None
    except BaseException:  # interrupted: take the launcher and its ranks down with us
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def run_mpi(args: list[str], nranks: int, timeout_s: float, env: dict[str, str] | None = None,
            cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run ``mpiexec -n nranks <args>`` with a hard timeout; kill the whole group on expiry.

    Raises ``subprocess.TimeoutExpired`` (with the output so far) on a hang.
    """
    return run_group([*mpiexec_argv(nranks), *args], timeout_s,
                     env=env if env is not None else child_env(nranks), cwd=cwd)


# --------------------------------------------------------------------------- hooks


#: opt out of the tests that install system packages and start daemons (apt-get, Slurm,
#: network namespaces, Debian's MPIs): HPCCLOUD_NO_SYSTEM_TESTS=1
NO_SYSTEM_TESTS_ENV = "HPCCLOUD_NO_SYSTEM_TESTS"
#: which tests count as system tests: a marker, or a file whose tests need root
SYSTEM_MARKERS = ("system", "slurm")
SYSTEM_FILES = ("test_netns.py",)


def pytest_configure(config):
    config.addinivalue_line("markers", "hpccloud_mpi(ranks, timeout): run under mpiexec -n N for N in ranks")
    config.addinivalue_line("markers", "system: installs system packages or starts daemons "
                            f"(root; {NO_SYSTEM_TESTS_ENV}=1 skips it)")


def _is_system_test(item) -> bool:
    return (any(item.get_closest_marker(m) is not None for m in SYSTEM_MARKERS)
            or Path(str(item.fspath)).name in SYSTEM_FILES)


def pytest_report_header(config):
    """Say before anything runs that some tests install packages (and how to opt out)."""
    if in_child():
        return None
    if os.environ.get(NO_SYSTEM_TESTS_ENV) == "1":
        return f"hpccloud: system tests skipped ({NO_SYSTEM_TESTS_ENV}=1)"
    if os.geteuid() != 0:
        return "hpccloud: system tests (Slurm, network namespaces, Debian MPIs) need root: skipped"
    return ("hpccloud: as root, the system tests (tests/slurm, tests/sitempi, tests/test_netns.py) "
            "apt-get install what they miss (Slurm, munge, Open MPI, MPICH, iptables, gcc) and "
            f"start daemons; {NO_SYSTEM_TESTS_ENV}=1 skips them")


def pytest_collection_modifyitems(config, items):
    if os.environ.get(NO_SYSTEM_TESTS_ENV) != "1":
        return
    skip = pytest.mark.skip(reason=f"system test: {NO_SYSTEM_TESTS_ENV}=1")
    for item in items:
        if _is_system_test(item):
            item.add_marker(skip)


def _ranks_of(marker) -> list[int]:
    ranks = marker.kwargs.get("ranks", marker.args[0] if marker.args else [1, 2, 3, 4])
    return [ranks] if isinstance(ranks, int) else list(ranks)


def pytest_generate_tests(metafunc):
    marker = metafunc.definition.get_closest_marker("hpccloud_mpi")
    if marker is not None:
        metafunc.parametrize("mpi_ranks", _ranks_of(marker), ids=lambda n: f"np{n}")


@pytest.fixture(autouse=True)
def mpi_ranks(request):
    """The rank count a ``mpi``-marked test runs at (None for ordinary tests)."""
    return getattr(request, "param", None)


@pytest.fixture
def comm(mpi_ranks):
    """``MPI.COMM_WORLD`` inside an MPI child; checks the world has the expected size."""
    if mpi_ranks is not None and not in_child():
        return None  # the parent only relaunches the test; it never runs the body
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    if mpi_ranks is not None:
        assert world.Get_size() == mpi_ranks, (
            f"expected a world of {mpi_ranks} ranks, got {world.Get_size()}: "
            "is the test running under the mpiexec that matches mpi4py?"
        )
    return world


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    marker = pyfuncitem.get_closest_marker("hpccloud_mpi")
    if marker is None or in_child():
        return None
    nranks = pyfuncitem.callspec.params["mpi_ranks"]
    timeout_s = float(marker.kwargs.get("timeout", DEFAULT_TIMEOUT_S))
    with tempfile.TemporaryDirectory(prefix="hpccloud-mpi-") as tmp:
        env = child_env(nranks, {RESULT_DIR_ENV: tmp})
        args = [sys.executable, "-m", "pytest", pyfuncitem.nodeid,
                "-q", "-x", "--no-header", "-p", "no:cacheprovider", "-p", "no:randomly",
                "--timeout", str(int(timeout_s) + 30), "--rootdir", str(pyfuncitem.config.rootpath),
                "-o", "addopts="]
        try:
            res = run_mpi(args, nranks, timeout_s, env=env, cwd=str(pyfuncitem.config.rootpath))
        except subprocess.TimeoutExpired as exc:
            outcomes = _outcomes(tmp)
            pytest.fail(f"MPI test hung: no result after {timeout_s:.0f} s at {nranks} ranks "
                        f"(ranks reporting: {sorted(outcomes)})\n{_tail(exc.output)}\n{_tail(exc.stderr)}",
                        pytrace=False)
        outcomes = _outcomes(tmp)
    failed = {r: o for r, o in outcomes.items() if o["outcome"] != "passed"}
    if failed:
        rank = min(failed)
        pytest.fail(f"rank {rank} of {nranks}: {failed[rank]['longrepr']}", pytrace=False)
    if res.returncode != 0 or len(outcomes) != nranks:
        pytest.fail(f"mpiexec -n {nranks} exited {res.returncode} with {len(outcomes)} of {nranks} "
                    f"ranks reporting\n--- stdout\n{_tail(res.stdout)}\n--- stderr\n{_tail(res.stderr)}",
                    pytrace=False)
    return True


def _tail(text: str | bytes | None, lines: int = 60) -> str:
    if not text:
        return ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _outcomes(folder: str) -> dict[int, dict]:
    out = {}
    for path in Path(folder).glob("rank-*.json"):
        rec = json.loads(path.read_text())
        out[rec["rank"]] = rec
    return out


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if not in_child() or item.get_closest_marker("hpccloud_mpi") is None:
        return
    report = outcome.get_result()
    folder = os.environ.get(RESULT_DIR_ENV)
    if report.when == "call" or (report.when == "setup" and not report.passed):
        from mpi4py import MPI

        rank = MPI.COMM_WORLD.Get_rank()
        rec = {"rank": rank, "outcome": report.outcome, "longrepr": str(report.longrepr or "")[-6000:]}
        if folder:
            tmp = Path(folder) / f".rank-{rank}.json.tmp"
            tmp.write_text(json.dumps(rec))
            tmp.rename(Path(folder) / f"rank-{rank}.json")
        if report.failed and MPI.COMM_WORLD.Get_size() > 1:
            sys.stderr.write(f"[rank {rank}] test failed:\n{rec['longrepr']}\n")
            sys.stderr.flush()
            MPI.COMM_WORLD.Abort(1)
