"""Real regions on one machine: one network namespace per rank, shaped inter-region links.

On one machine every pair of MPI ranks talks through shared memory at the same
speed, so "topology-aware" cannot be shown. :class:`RegionalNet` builds a small
network instead and removes it afterwards, even on failure:

- a *hub* namespace holding a Linux bridge, and one namespace per rank, each
  joined to the bridge by a veth pair (``rnet0`` inside the rank's namespace);
- addresses from 198.18.0.0/15 (RFC 2544, reserved for network benchmarks): region
  ``r`` is the subnet ``198.18.r.0/24``; rank ``i`` of region ``r`` is
  ``198.18.r.(i+1)``, all on one flat /15 link so no routing is needed;
- inter-region **rate**: in every rank's namespace an ``htb`` root on ``rnet0`` with
  one class per *other* region (``rate = ceil = rate_mbit``) selected by a ``u32``
  filter on the destination subnet; unclassified (intra-region) traffic bypasses
  htb, so inside a region the link stays at veth speed. The rate is per sending
  rank: each rank has its own uplink to each other region;
- inter-region **latency** (one way, ``delay_ms``): with ``sch_netem`` a netem
  leaf under each htb class; without it (this machine's kernel) on the
  RECEIVING side, ``iptables -A INPUT -s <other region> -j NFQUEUE --queue-num r``
  inside the receiver's namespace, served by ``nfq_delay`` (``nfq_delay.c`` beside
  this file, compiled at set-up into a temp dir with ``-lnetfilter_queue``), which
  holds each packet for the delay and then accepts it. Delaying on the sender's
  side instead collapses TCP throughput (TCP small queues), measured ~9 Mbit/s
  instead of 95;
- ranks are launched as one MPMD ``mpiexec`` whose every rank is wrapped in
  ``ip netns exec NS``, with MPICH forced onto the network (:meth:`RegionalNet.mpi_env`):
  ``MPIR_CVAR_NOLOCAL=1`` and ``MPIR_CVAR_CH4_NETMOD=ofi FI_PROVIDER=tcp
  FI_TCP_IFACE=rnet0``; without both, ranks use shared memory across namespaces
  and the topology vanishes.

Nothing is made in the root namespace: every link, qdisc and iptables rule lives
in a namespace this object created, so deleting the namespaces removes them;
the helpers are killed by pid first. :meth:`RegionalNet.leftovers` lists anything
still there (used by the tests).

Needs root, ``ip``/``tc`` (iproute2), and without netem ``iptables``, ``cc`` and
libnetfilter-queue's headers (Debian: ``iptables libnetfilter-queue-dev``);
:func:`missing_prerequisites` says what is missing, :func:`install_prerequisites`
installs it with apt-get.

By hand (2 regions x 2 ranks, 5 ms, 100 Mbit/s; runs the ping-pong check)::

    sudo .venv/bin/python -m hpccloud.testing.netns --regions 2,2 --delay-ms 5 --rate-mbit 100
    sudo .venv/bin/python -m hpccloud.testing.netns --regions 2,2 -- hpccloud probe --json out.json

In Python::

    with RegionalNet((2, 2), delay_ms=5, rate_mbit=100) as net:
        res = net.run_mpi([sys.executable, "-m", "hpccloud.testing.pingpong"], timeout_s=120)
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

from hpccloud.testing.procs import pid_alive

IFACE = "rnet0"
NS_PREFIX = "hpcc"
HELPER_SOURCE = Path(__file__).with_name("nfq_delay.c")
CMD_TIMEOUT_S = 20.0


class NetnsError(RuntimeError):
    """A step of building or tearing down the regional network failed."""


def _run(cmd: list[str], timeout_s: float = CMD_TIMEOUT_S, check: bool = True,
         ) -> subprocess.CompletedProcess:
    """Run one command with a timeout; raise :class:`NetnsError` naming it on failure."""
    try:
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise NetnsError(f"timed out after {timeout_s:.0f} s: {' '.join(cmd)}") from exc
    if check and res.returncode != 0:
        raise NetnsError(f"failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr.strip()}")
    return res


def missing_prerequisites(need_nfqueue: bool = True) -> list[str]:
    """What this machine lacks to build a regional network ([] when nothing).

    >>> isinstance(missing_prerequisites(), list)
    True
    """
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces need CAP_NET_ADMIN)")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (Debian package iproute2)")
    if need_nfqueue:
        if shutil.which("iptables") is None:
            missing.append("iptables (Debian package iptables)")
        if shutil.which("cc") is None and shutil.which("gcc") is None:
            missing.append("a C compiler (Debian package gcc)")
        if not Path("/usr/include/libnetfilter_queue/libnetfilter_queue.h").exists():
            missing.append("libnetfilter_queue headers (Debian package libnetfilter-queue-dev)")
    return missing


def install_prerequisites(timeout_s: float = 300.0) -> None:
    """``apt-get install iptables libnetfilter-queue-dev`` (root only; Debian/Ubuntu)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "iproute2", "iptables", "gcc",
                 "libnetfilter-queue-dev"]):
        subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=timeout_s, env=env, check=False)


def ensure_prerequisites() -> list[str]:
    """Install what is missing (as :func:`install_prerequisites`) and return what still is.

    Every test that builds a :class:`RegionalNet` calls this first, so none of
    them skips on a fresh machine only because another ran later.
    """
    if os.geteuid() != 0:
        return missing_prerequisites()
    if shutil.which("ip") is None or shutil.which("tc") is None:
        install_prerequisites()
    try:
        need = not kernel_has_netem()
    except (OSError, NetnsError):  # no iproute2 even now: reported below
        need = True
    if missing_prerequisites(need_nfqueue=need):
        install_prerequisites()
    return missing_prerequisites(need_nfqueue=need)


def kernel_has_netem() -> bool:
    """Whether ``tc ... netem`` works here (tried on a scratch namespace's loopback)."""
    ns = f"{NS_PREFIX}-probe-{secrets.token_hex(3)}"
    try:
        _run(["ip", "netns", "add", ns])
        res = _run(["ip", "-n", ns, "link", "set", "lo", "up"], check=False)
        res = _run(["tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
                   check=False)
        return res.returncode == 0
    finally:
        _run(["ip", "netns", "del", ns], check=False)


def compile_helper(out_dir: Path) -> Path:
    """Compile ``nfq_delay.c`` into ``out_dir`` and return the binary's path."""
    cc = shutil.which("cc") or shutil.which("gcc") or "cc"
    exe = out_dir / "nfq_delay"
    _run([cc, "-O2", "-Wall", "-o", str(exe), str(HELPER_SOURCE), "-lnetfilter_queue",
          "-lnfnetlink"], timeout_s=60)
    return exe


def _root_snapshot() -> dict[str, str]:
    """Root-namespace state this fixture must leave as it found it."""
    snap = {"links": _run(["ip", "-o", "link", "show"], check=False).stdout,
            "qdiscs": _run(["tc", "qdisc", "show"], check=False).stdout}
    if shutil.which("iptables-save"):
        rules = _run(["iptables-save"], check=False).stdout
        snap["iptables"] = "\n".join(ln for ln in rules.splitlines() if not ln.startswith("#"))
    return snap


class RegionalNet:
    """A regional network of namespaces: ``ranks_per_region[r]`` ranks in region ``r``.

    Parameters
    ----------
    ranks_per_region : sequence of int
        E.g. ``(2, 2)``: ranks 0-1 in region 0, ranks 2-3 in region 1.
    delay_ms : float
        One-way latency added between regions (0 = none).
    rate_mbit : float
        Rate of each rank's uplink to each other region (0 = unshaped).
    tag : str, optional
        Names the namespaces ``hpcc-<tag>-hub``, ``hpcc-<tag>-r<i>``; random by default.

    Examples
    --------
    >>> net = RegionalNet((2, 1), delay_ms=5, rate_mbit=100, tag="doc")
    >>> net.rank_region, net.address(2)
    ((0, 0, 1), '198.18.1.1')
    """

    def __init__(self, ranks_per_region, delay_ms: float = 5.0, rate_mbit: float = 100.0,
                 tag: str | None = None):
        self.ranks_per_region = tuple(int(n) for n in ranks_per_region)
        if not self.ranks_per_region or min(self.ranks_per_region) < 1:
            raise ValueError(f"ranks_per_region must be positive counts, got {ranks_per_region!r}")
        if len(self.ranks_per_region) > 254 or max(self.ranks_per_region) > 253:
            raise ValueError("at most 254 regions of at most 253 ranks (one /24 per region)")
        self.delay_ms = float(delay_ms)
        self.rate_mbit = float(rate_mbit)
        self.tag = tag or secrets.token_hex(3)
        self.rank_region = tuple(r for r, n in enumerate(self.ranks_per_region) for _ in range(n))
        self.hub = f"{NS_PREFIX}-{self.tag}-hub"
        self.namespaces = tuple(f"{NS_PREFIX}-{self.tag}-r{i}" for i in range(self.nranks))
        self.helper_pids: list[int] = []
        self.use_netem: bool | None = None
        self.setup_s = float("nan")
        self.teardown_s = float("nan")
        self._tmp: Path | None = None
        self._snapshot: dict[str, str] = {}
        self._created: list[str] = []

    # ------------------------------------------------------------------ layout
    @property
    def nranks(self) -> int:
        return len(self.rank_region)

    def region_subnet(self, region: int) -> str:
        return f"198.18.{region}.0/24"

    def address(self, rank: int) -> str:
        region = self.rank_region[rank]
        index = rank - self.rank_region.index(region)
        return f"198.18.{region}.{index + 1}"

    # ------------------------------------------------------------------ build
    def up(self) -> RegionalNet:
        """Build the network (tearing down whatever was built if a step fails)."""
        t0 = time.perf_counter()
        missing = missing_prerequisites(need_nfqueue=False)
        if missing:
            raise NetnsError("cannot build a regional network: missing " + "; ".join(missing))
        self._snapshot = _root_snapshot()
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        self.setup_s = time.perf_counter() - t0
        return self

    def _ns(self, ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return _run(["ip", "netns", "exec", ns, *cmd], check=check)

    def _build(self) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix=f"hpcc-netns-{self.tag}-"))
        self.use_netem = self.delay_ms > 0 and kernel_has_netem()
        need_nfq = self.delay_ms > 0 and not self.use_netem
        if need_nfq:
            missing = missing_prerequisites(need_nfqueue=True)
            if missing:
                raise NetnsError("no sch_netem in this kernel and the NFQUEUE fallback lacks: "
                                 + "; ".join(missing))
        helper = compile_helper(self._tmp) if need_nfq else None

        for ns in (self.hub, *self.namespaces):
            _run(["ip", "netns", "add", ns])
            self._created.append(ns)
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            # no IPv6: nothing but the 198.18/15 IPv4 traffic we shape leaves a namespace
            self._ns(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", check=False)
            self._ns(ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1", check=False)
        _run(["ip", "-n", self.hub, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", self.hub, "link", "set", "br0", "up"])

        for rank, ns in enumerate(self.namespaces):
            port = f"p{rank}"
            _run(["ip", "-n", self.hub, "link", "add", port, "type", "veth",
                  "peer", "name", IFACE, "netns", ns])
            _run(["ip", "-n", self.hub, "link", "set", port, "master", "br0", "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{self.address(rank)}/15", "dev", IFACE])
            _run(["ip", "-n", ns, "link", "set", IFACE, "up"])
            # a WAN-tuned host: an idle pause between messages must not restart slow start
            self._ns(ns, "sysctl", "-qw", "net.ipv4.tcp_slow_start_after_idle=0", check=False)
            self._shape(rank, ns)

        if need_nfq:
            assert helper is not None  # compiled above when need_nfq
            self._start_delay_helpers(helper)

    def _other_regions(self, rank: int) -> list[int]:
        mine = self.rank_region[rank]
        return [r for r in range(len(self.ranks_per_region)) if r != mine]

    def _shape(self, rank: int, ns: str) -> None:
        others = self._other_regions(rank)
        if not others or (self.rate_mbit <= 0 and not self.use_netem):
            return
        # no `default`: unclassified (intra-region) packets skip htb and stay at veth speed
        _run(["tc", "-n", ns, "qdisc", "add", "dev", IFACE, "root", "handle", "1:", "htb"])
        rate = f"{self.rate_mbit}mbit" if self.rate_mbit > 0 else "100gbit"
        for region in others:
            classid = f"1:{10 + region}"
            _run(["tc", "-n", ns, "class", "add", "dev", IFACE, "parent", "1:", "classid",
                  classid, "htb", "rate", rate, "ceil", rate])
            _run(["tc", "-n", ns, "filter", "add", "dev", IFACE, "parent", "1:", "protocol", "ip",
                  "prio", "1", "u32", "match", "ip", "dst", self.region_subnet(region),
                  "flowid", classid])
            if self.use_netem:
                _run(["tc", "-n", ns, "qdisc", "add", "dev", IFACE, "parent", classid,
                      "handle", f"{10 + region}:", "netem", "delay", f"{self.delay_ms}ms",
                      "limit", "100000"])

    def _start_delay_helpers(self, helper: Path) -> None:
        delay_us = str(round(self.delay_ms * 1000))
        tmp = self._tmp
        assert tmp is not None  # up() made it before compiling the helper
        ready = []
        for rank, ns in enumerate(self.namespaces):
            for region in self._other_regions(rank):
                ready_file = tmp / f"ready-{rank}-{region}"
                log = open(tmp / f"helper-{rank}-{region}.log", "wb")  # noqa: SIM115
                # own session, no terminal, no inherited pipe: a background helper that
                # kept our stdout open would hang whoever reads it to EOF
                proc = subprocess.Popen(
                    ["ip", "netns", "exec", ns, str(helper), str(region), delay_us,
                     str(ready_file)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                    close_fds=True)
                log.close()
                self.helper_pids.append(proc.pid)
                ready.append((ready_file, proc, rank, region))
        deadline = time.monotonic() + CMD_TIMEOUT_S
        for ready_file, proc, rank, region in ready:
            while not ready_file.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    text = (tmp / f"helper-{rank}-{region}.log").read_text(errors="replace")
                    raise NetnsError(f"nfq_delay for rank {rank} <- region {region} did not "
                                     f"start (exit {proc.poll()}): {text.strip()}")
                time.sleep(0.01)
        # rules only once every queue has a listener: NFQUEUE drops packets nobody reads
        for rank, ns in enumerate(self.namespaces):
            for region in self._other_regions(rank):
                self._ns(ns, "iptables", "-w", "5", "-A", "INPUT", "-s",
                         self.region_subnet(region), "-j", "NFQUEUE", "--queue-num", str(region))

    # ------------------------------------------------------------------ counters
    def cross_region_bytes(self) -> dict[tuple[int, int], int]:
        """Bytes each rank has sent to each other region so far, counted by the kernel.

        Read from the htb classes' ``Sent`` counters (IP packets with headers, so a
        little above the payload), so they measure what crossed the slow links
        independently of anything hpccloud reports. Keys are ``(rank, region)``.
        """
        out = {}
        for rank, ns in enumerate(self.namespaces):
            if not self._other_regions(rank) or (self.rate_mbit <= 0 and not self.use_netem):
                continue
            text = _run(["tc", "-n", ns, "-s", "class", "show", "dev", IFACE]).stdout
            for m in re.finditer(r"class htb 1:(\d+) .*?\n\s*Sent (\d+) bytes", text):
                out[(rank, int(m.group(1)) - 10)] = int(m.group(2))
        return out

    # ------------------------------------------------------------------ run
    def mpi_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment that forces MPICH onto the namespaces' network (no shared memory)."""
        env = dict(os.environ if base is None else base)
        env.update({
            "MPIR_CVAR_NOLOCAL": "1",          # no shared memory between "local" ranks
            "MPIR_CVAR_CH4_NETMOD": "ofi",     # the PyPI wheel has ucx and ofi; take ofi
            "FI_PROVIDER": "tcp",
            "FI_TCP_IFACE": IFACE,
            "UCX_TLS": "tcp,self",             # in case MPICH picks UCX after all
            "UCX_NET_DEVICES": IFACE,
        })
        return env

    def mpiexec_args(self, cmd: list[str], mpiexec: str | None = None) -> list[str]:
        """``mpiexec -n 1 ip netns exec NS0 cmd : -n 1 ip netns exec NS1 cmd : ...``."""
        if mpiexec is None:
            from hpccloud.testing.mpi_pytest import mpiexec_path

            mpiexec = mpiexec_path()
        args = [mpiexec]
        for i, ns in enumerate(self.namespaces):
            if i:
                args.append(":")
            args += ["-n", "1", "ip", "netns", "exec", ns, *cmd]
        return args

    def run_mpi(self, cmd: list[str], timeout_s: float, env: dict[str, str] | None = None,
                cwd: str | None = None) -> subprocess.CompletedProcess:
        """Run ``cmd`` on every rank, each in its namespace; kill the group on timeout."""
        from hpccloud.testing.mpi_pytest import run_group

        return run_group(self.mpiexec_args(cmd), timeout_s, env=self.mpi_env(env), cwd=cwd)

    # ------------------------------------------------------------------ teardown
    def down(self) -> None:
        """Remove everything :meth:`up` made; safe to call twice or after a partial build."""
        t0 = time.perf_counter()
        for pid in self.helper_pids:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 2.0
        for pid in self.helper_pids:
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            if pid_alive(pid):
                _signal(pid, signal.SIGKILL)
            _reap(pid)
        # any process still inside one of OUR namespaces was started by us (a stray rank)
        for ns in self._created:
            res = _run(["ip", "netns", "pids", ns], check=False)
            for pid in res.stdout.split():
                _signal(int(pid), signal.SIGKILL)
        for ns in reversed(self._created):
            _run(["ip", "netns", "del", ns], check=False)
        self._created = []
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
        self.teardown_s = time.perf_counter() - t0

    def leftovers(self) -> list[str]:
        """Everything of this network still on the machine ([] after a clean :meth:`down`)."""
        left = []
        names = set(_run(["ip", "netns", "list"], check=False).stdout.split())
        left += [f"namespace {ns}" for ns in (self.hub, *self.namespaces) if ns in names]
        left += [f"helper process {pid}" for pid in self.helper_pids if pid_alive(pid)]
        if self._tmp is not None and self._tmp.exists():
            left.append(f"temp dir {self._tmp}")
        now = _root_snapshot()
        for key, before in self._snapshot.items():
            if key in ("links", "qdiscs"):
                # other work may add links meanwhile; ours would carry our names
                extra = set(now.get(key, "").splitlines()) - set(before.splitlines())
                left += [f"root {key[:-1]}: {ln.strip()}" for ln in extra
                         if self.tag in ln or IFACE in ln]
            elif now.get(key) != before:
                left.append(f"root {key} changed")
        return left

    def __enter__(self) -> RegionalNet:
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def remove_stale(prefix: str = NS_PREFIX) -> list[str]:
    """Delete namespaces named ``<prefix>-*-hub`` / ``-r<i>`` left by a killed run."""
    removed = []
    for name in _run(["ip", "netns", "list"], check=False).stdout.split():
        if name.startswith(prefix + "-") and (name.endswith("-hub") or "-r" in name):
            for pid in _run(["ip", "netns", "pids", name], check=False).stdout.split():
                _signal(int(pid), signal.SIGKILL)
            _run(["ip", "netns", "del", name], check=False)
            removed.append(name)
    return removed


def _parse_regions(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(x) for x in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"--regions wants counts like 2,2 (got {text!r})")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpccloud.testing.netns",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--regions", type=_parse_regions, default=(2, 2),
                        help="ranks per region, e.g. 2,2 (default)")
    parser.add_argument("--delay-ms", type=float, default=5.0)
    parser.add_argument("--rate-mbit", type=float, default=100.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for the MPI run")
    parser.add_argument("--tag", default=None, help="names the namespaces hpcc-<tag>-*")
    parser.add_argument("--remove-stale", action="store_true",
                        help="delete namespaces left by a killed run and exit")
    parser.add_argument("command", nargs="*",
                        help="run on every rank (after --); default: the ping-pong check")
    args = parser.parse_args(argv)
    if args.remove_stale:
        print("removed:", " ".join(remove_stale()) or "nothing")
        return 0
    missing = missing_prerequisites()
    if missing:
        print("missing: " + "; ".join(missing), file=sys.stderr)
        return 2
    cmd = args.command or [sys.executable, "-m", "hpccloud.testing.pingpong"]

    def _on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    net = RegionalNet(args.regions, delay_ms=args.delay_ms, rate_mbit=args.rate_mbit, tag=args.tag)
    rc = 1
    try:
        net.up()
        print(f"regional network up in {net.setup_s:.2f} s: ranks->regions {net.rank_region}, "
              f"delay {'netem' if net.use_netem else 'nfqueue'} {net.delay_ms} ms, "
              f"rate {net.rate_mbit} Mbit/s", flush=True)
        from hpccloud.testing.mpi_pytest import child_env

        res = net.run_mpi(cmd, timeout_s=args.timeout, env=child_env(net.nranks))
        sys.stdout.write(res.stdout)
        sys.stderr.write(res.stderr)
        rc = res.returncode
    except KeyboardInterrupt:
        rc = 130
    except subprocess.TimeoutExpired as exc:
        sys.stdout.write(exc.output or "")
        sys.stderr.write(cast(str, exc.stderr or "") + f"\nMPI run timed out after {args.timeout:.0f} s\n")
        rc = 124
    except NetnsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        rc = 1
    finally:
        net.down()
        left = net.leftovers()
        print(f"torn down in {net.teardown_s:.2f} s; left behind: {left or 'nothing'}", flush=True)
    return rc if not left else 1


if __name__ == "__main__":
    raise SystemExit(main())
