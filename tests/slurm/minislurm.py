"""A real, throw-away Slurm cluster on this machine, for testing the ``slurm/`` templates.

It installs the Debian packages (``slurmctld slurmd slurm-client munge``) when
they are missing, then starts, as detached daemons whose every file lives in
one fresh temporary folder:

* ``munged`` as the ``munge`` user, with its own key, socket, pid and log;
* ``slurmctld`` (the controller) on a free loopback port;
* one ``slurmd`` per node name (default two: ``eu-node001`` and ``us-node001``),
  each on its own port — several slurmd on one host is how a one-machine
  cluster gets several *node names*, which is what the region mapping is
  matched against.

Every daemon is stopped by the pid in its pid file (:meth:`MiniSlurm.stop`),
which is safe to call after a half-finished start.

Run by hand (as root) to poke at it::

    python tests/slurm/minislurm.py          # starts, prints SLURM_CONF, waits for Enter, stops

Facts this relies on (Slurm 22.05, Debian 12), looked up rather than guessed:

* ``sbatch --wait`` polls every 2 s only while ``MinJobAge / 2 <= 2``; above
  that its sleep grows x4 up to 32 s. ``MinJobAge=4`` keeps the polls at 2 s
  and still keeps a finished job's record long enough to read its exit code.
* ``SlurmdParameters=config_overrides`` lets every slurmd of this one host
  declare the machine's CPUs as its own (the nodes share them).
* ``proctrack/linuxproc`` + ``task/affinity`` need no cgroups and no systemd;
  ``task/affinity`` binds every task to the CPUs of its allocation
  (``sched_setaffinity``), as a centre's Slurm does, so the templates'
  ``--cpus-per-task`` and ``--cpu-bind`` are exercised. Binding needs real
  CPU ids: each node declares the machine's own CPUs (and memory, so ``--mem``
  requests are checked against something real).
"""

from __future__ import annotations

import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from hpccloud.testing.procs import pid_alive

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scancel", "munged")
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_NODES = ("eu-node001", "us-node001")

#: what a test session measured, name -> seconds (printed by tests/slurm/conftest.py)
TIMINGS: dict[str, float] = {}


class SlurmUnavailable(RuntimeError):
    """This machine cannot run the cluster at all (not root, no apt-get)."""


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + SBIN_PATH)


def cannot_run_reason() -> str | None:
    """Why a cluster cannot be brought up here, or None if it can."""
    if os.geteuid() != 0:
        return "not running as root (slurmd and munged need root)"
    if all(_which(b) for b in BINARIES):
        return None
    if _which("apt-get") is None:
        return f"Slurm is not installed and apt-get is unavailable (missing: {missing_binaries()})"
    return None


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if _which(b) is None]


def install(timeout_s: float = 300.0) -> tuple[float, str]:
    """Install the packages if any binary is missing; return (seconds, what was done).

    apt's output is captured (not printed) and shown only when it fails.
    """
    t0 = time.perf_counter()
    if not missing_binaries():
        return time.perf_counter() - t0, "already installed"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", PATH=SBIN_PATH)
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
    did = "apt-get install"
    if res.returncode != 0:
        # empty or stale package lists (a fresh container): update once, then retry
        upd = subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True,
                             env=env, timeout=timeout_s)
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
        did = "apt-get update + install"
        if res.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {res.returncode}) after "
                               f"`apt-get update` (exit {upd.returncode}):\n"
                               f"{_tail(upd.stdout + upd.stderr)}\n{_tail(res.stdout + res.stderr)}")
    if missing_binaries():
        raise RuntimeError(f"installed {PACKAGES} but still missing {missing_binaries()}")
    return time.perf_counter() - t0, did


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join((text or "").splitlines()[-lines:])


def _free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on loopback (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class MiniSlurm:
    """A controller plus one slurmd per node name, everything under ``root``."""

    nodes: tuple[str, ...] = DEFAULT_NODES
    #: the machine's own CPUs: task/affinity binds to real CPU ids (8 declared CPUs on a
    #: 2-CPU machine made every 8-CPU step fail "Unable to layout tasks on given cpus")
    cpus_per_node: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hpccloud-slurm-")))
    keep: bool = False
    started: list[tuple[str, Path]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # munged (not root) must reach its socket folder through this one
        os.chmod(self.root, 0o755)
        self.conf = self.root / "slurm.conf"
        self.munge_run = self.root / "munge-run"      # socket + pid: world-traversable
        self.munge_etc = self.root / "munge-etc"      # key, seed, log: private to munge
        self.socket = self.munge_run / "munge.socket.2"
        self.logs = self.root / "log"

    # ------------------------------------------------------------------ environment

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for Slurm client commands (sbatch, squeue, …) against this cluster."""
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = env.get("PATH", "") + os.pathsep + SBIN_PATH
        # a job must not inherit the test runner's Slurm context, if it has one
        for k in [k for k in env if k.startswith(("SLURM_", "SBATCH_", "SRUN_"))]:
            if k != "SLURM_CONF":
                del env[k]
        if extra:
            env.update(extra)
        return env

    def _run(self, args: list[str], timeout_s: float = 30.0, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(args, capture_output=True, text=True, env=self.env(),
                              timeout=timeout_s, **kw)

    # ------------------------------------------------------------------ start

    def write_conf(self, ctld_port: int, node_ports: list[int]) -> None:
        host = socket.gethostname().split(".")[0]
        lines = [
            "ClusterName=hpcctest",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.socket}",
            f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool'}/%n",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root}/slurmd-%n.pid",
            f"SlurmctldLogFile={self.logs / 'slurmctld.log'}",
            f"SlurmdLogFile={self.logs}/slurmd-%n.log",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/affinity",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "SlurmdParameters=config_overrides",
            "MpiDefault=pmi2",
            "SchedulerType=sched/builtin",
            # start a batch job as soon as it is submitted (default: up to 3 s later)
            "SchedulerParameters=batch_sched_delay=0,sched_min_interval=0",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "JobAcctGatherType=jobacct_gather/none",
            "MinJobAge=4",
            # job ids unique across test runs: under srun's pmi2 MPICH names its shared
            # memory after the job and step, and a segment left by a killed job of an
            # earlier run with the same id makes MPI_Init fail ("Out of memory")
            f"FirstJobId={random.randint(1_000, 60_000_000)}",
            "ReturnToService=2",
            # a job that hangs is killed by the test's own timeout, not left running
            "KillWait=5",
        ]
        for name, port in zip(self.nodes, node_ports, strict=True):
            lines.append(f"NodeName={name} NodeHostname={host} NodeAddr=127.0.0.1 Port={port} "
                         f"CPUs={self.cpus_per_node} RealMemory={_memory_mib()} State=UNKNOWN")
        # OverSubscribe=FORCE:4: up to 4 jobs share a CPU (no gang scheduling: they just
        # run), so the test jobs run side by side on the real CPUs they are bound to;
        # --exclusive (the bench templates) still gets the nodes to itself
        lines.append(f"PartitionName=hpcc Nodes={','.join(self.nodes)} Default=YES "
                     "MaxTime=INFINITE State=UP OverSubscribe=FORCE:4")
        self.conf.write_text("\n".join(lines) + "\n")

    def _start_munge(self) -> None:
        munge = pwd.getpwnam("munge")
        for d, mode in ((self.munge_run, 0o755), (self.munge_etc, 0o700)):
            d.mkdir(mode=mode)
            os.chown(d, munge.pw_uid, munge.pw_gid)
            os.chmod(d, mode)
        key = self.munge_etc / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chown(key, munge.pw_uid, munge.pw_gid)
        os.chmod(key, 0o400)
        self.started.append(("munged", self.munge_run / "munged.pid"))
        self._daemon([_which("munged"), f"--socket={self.socket}",
                      f"--pid-file={self.munge_run / 'munged.pid'}",
                      f"--log-file={self.munge_etc / 'munged.log'}",
                      f"--seed-file={self.munge_etc / 'munged.seed'}",
                      f"--key-file={key}"],
                     user=munge.pw_uid, group=munge.pw_gid)
        self._wait_for(lambda: self.socket.exists(), 10.0, "munged's socket",
                       self.munge_etc / "munged.log")

    def _daemon(self, args: list, **kw) -> None:
        """Start a self-daemonising program detached (own session, no tty, no pipes)."""
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True,
                                env=self.env(), **kw)
        # the foreground process forks the daemon and exits
        rc = proc.wait(timeout=30)
        if rc != 0:
            raise RuntimeError(f"{args[0]} exited {rc} while starting; logs under {self.root}")

    def _wait_for(self, ok, timeout_s: float, what: str, log: Path | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ok():
                return
            time.sleep(0.1)
        tail = _tail(log.read_text(errors="replace")) if log and log.exists() else ""
        raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{tail}")

    def start(self, timeout_s: float = 60.0) -> None:
        """munged, slurmctld, the slurmds; return when every node is idle."""
        for d in ("state", "spool", "log"):
            (self.root / d).mkdir()
        for n in self.nodes:
            (self.root / "spool" / n).mkdir()
        ctld_port, *node_ports = _free_ports(1 + len(self.nodes))
        self.write_conf(ctld_port, node_ports)
        self._start_munge()
        self.started.append(("slurmctld", self.root / "slurmctld.pid"))
        self._daemon([_which("slurmctld"), "-c", "-f", str(self.conf)])
        for n in self.nodes:
            self.started.append(("slurmd", self.root / f"slurmd-{n}.pid"))
            self._daemon([_which("slurmd"), "-N", n, "-f", str(self.conf)])

        def all_idle() -> bool:
            res = self._run(["sinfo", "-h", "-N", "-o", "%N %t"], timeout_s=10)
            states = dict(line.split() for line in res.stdout.splitlines() if line.strip())
            return res.returncode == 0 and all(states.get(n) == "idle" for n in self.nodes)

        self._wait_for(all_idle, timeout_s, f"nodes {self.nodes} to be idle",
                       self.logs / "slurmctld.log")

    # ------------------------------------------------------------------ jobs

    def sbatch(self, script: str | os.PathLike | None, args: list[str], *, cwd: str | os.PathLike,
               env: dict[str, str] | None = None, timeout_s: float = 120.0,
               ) -> tuple[subprocess.CompletedProcess, float]:
        """``sbatch --wait`` a script (None: ``--wrap`` in ``args``); return (result, wall seconds).

        On timeout the job is cancelled (by its unique name) and TimeoutExpired
        is raised with sbatch's output and the queue.
        """
        name = f"hpcct-{os.getpid()}-{time.monotonic_ns()}"
        cmd = [_which("sbatch"), "--wait", "--parsable", f"--job-name={name}", *args]
        if script is not None:
            cmd.append(str(script))
        t0 = time.perf_counter()
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, env=self.env(env),
                                 cwd=cwd, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            queue = self._run(["squeue", "-o", "%i %j %T %r %N"], timeout_s=10).stdout
            self._run(["scancel", f"--name={name}"], timeout_s=10)
            raise subprocess.TimeoutExpired(cmd, timeout_s, output=exc.output,
                                            stderr=f"{exc.stderr}\nqueue:\n{queue}") from None
        return res, time.perf_counter() - t0

    # ------------------------------------------------------------------ stop

    def stop(self, timeout_s: float = 20.0) -> list[str]:
        """Cancel every job, then stop each started daemon by its pid file.

        Returns a list of problems (daemons that needed SIGKILL or would not
        die); safe to call after a partial start.
        """
        problems: list[str] = []
        if self.conf.exists() and any(n == "slurmctld" for n, _ in self.started):
            try:
                self._run(["scancel", "--full", "--user=root"], timeout_s=10)
                self._wait_for(lambda: not self._run(["squeue", "-h"], timeout_s=10).stdout.strip(),
                               10.0, "the queue to drain")
            except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
                problems.append(f"could not drain the queue: {exc}")
        # slurmds first (they talk to the controller), munged last (everyone talks to it)
        for name, pid_file in reversed(self.started):
            pid = _read_pid(pid_file)
            if pid is None:
                continue
            comm = _comm(pid)
            if comm is None or not comm.startswith(name[:15]):
                continue  # already gone, or the pid was reused by someone else
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s / 2
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
                problems.append(f"{name} (pid {pid}) ignored SIGTERM; killed")
                time.sleep(0.2)
            if pid_alive(pid):
                problems.append(f"{name} (pid {pid}) is still running after SIGKILL")
        if not self.keep and not problems:
            shutil.rmtree(self.root, ignore_errors=True)
        return problems

    def running_pids(self) -> dict[str, int]:
        """Daemons from our pid files that are still alive (for the no-leftovers check)."""
        out = {}
        for name, pid_file in self.started:
            pid = _read_pid(pid_file)
            if pid is not None and pid_alive(pid) and (_comm(pid) or "").startswith(name[:15]):
                out[f"{name}:{pid_file.name}"] = pid
        return out

    def log_tails(self) -> str:
        parts = []
        for log in sorted(self.logs.glob("*.log")) if self.logs.exists() else []:
            parts.append(f"--- {log.name}\n{_tail(log.read_text(errors='replace'), 15)}")
        return "\n".join(parts)


def _memory_mib() -> int:
    """The machine's memory in MiB (what every node declares)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 1024


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


if __name__ == "__main__":
    reason = cannot_run_reason()
    if reason:
        raise SystemExit(f"cannot start a Slurm cluster here: {reason}")
    print("install:", install())
    cluster = MiniSlurm(keep=True)
    try:
        cluster.start()
        print(f"export SLURM_CONF={cluster.conf}")
        input("cluster is up; press Enter to stop it ")
    finally:
        print("stop:", cluster.stop() or "clean", "- files kept in", cluster.root)
