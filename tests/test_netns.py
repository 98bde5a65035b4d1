"""Real regions on one machine (network namespaces, shaped links): measured, discovered, removed.

Needs root (and iptables + libnetfilter-queue headers + a C compiler where the
kernel has no sch_netem; installed with apt-get when missing). Without root the
tests are skipped with the reason in the summary (``-ra``). Budget: ~30 s on an idle machine.

Shaping: 2 regions x 2 ranks, 5 ms one way and 100 Mbit/s between regions.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hpccloud.measure.discover import compare_regions, discover_regions
from hpccloud.testing import netns
from hpccloud.testing.mpi_pytest import child_env, json_records

DELAY_MS = 5.0
RATE_MBIT = 100.0
LAYOUT = (2, 2)
MPI_TIMEOUT_S = 120

def _prerequisites_or_skip() -> None:
    if os.geteuid() != 0:
        pytest.skip("NOT RUN: regional-network tests need root (network namespaces)")
    missing = netns.ensure_prerequisites()
    if missing:
        pytest.skip("NOT RUN: regional-network tests lack " + "; ".join(missing))


@pytest.fixture(scope="module")
def regional_net():
    """2 regions x 2 ranks, built once for the module; torn down (and checked) at its end."""
    _prerequisites_or_skip()
    net = netns.RegionalNet(LAYOUT, delay_ms=DELAY_MS, rate_mbit=RATE_MBIT)
    net.up()
    try:
        yield net
    finally:
        net.down()
    left = net.leftovers()
    assert not left, f"regional network left behind: {left}"


def _json_line(stdout: str) -> dict:
    records = json_records(stdout)
    assert records, f"no JSON line in output:\n{stdout[-3000:]}"
    return records[-1]


def _run(net, cmd):
    res = net.run_mpi(cmd, timeout_s=MPI_TIMEOUT_S, env=child_env(net.nranks))
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def _split(net, matrix):
    """Values of a P×P matrix for pairs inside a region and across regions."""
    m = np.array([[np.nan if x is None else x for x in row] for row in matrix], dtype=float)
    region = np.array(net.rank_region)
    same = region[:, None] == region[None, :]
    off = ~np.eye(len(region), dtype=bool)
    return m[same & off], m[~same]


def test_pingpong_sees_the_shaped_links(regional_net):
    net = regional_net
    before = net.cross_region_bytes()
    doc = _json_line(_run(net, [sys.executable, "-m", "hpccloud.testing.pingpong"]).stdout)
    after = net.cross_region_bytes()
    assert sorted(after) == [(0, 1), (1, 1), (2, 0), (3, 0)]
    # each cross pair sent (1 warm-up + 3) round trips of 1 MiB, both ways; the kernel's
    # count of what crossed the shaped links must be at least that payload
    crossed = sum(after.values()) - sum(before.values())
    assert crossed >= 4 * 4 * 2 * doc["large_bytes"], (before, after)
    lat_in, lat_across = _split(net, doc["latency_s"])
    bw_in, bw_across = _split(net, doc["bandwidth_bytes_per_s"])
    rate_bytes_per_s = RATE_MBIT * 1e6 / 8
    print(f"\nsetup {net.setup_s:.2f} s; latency within {np.median(lat_in) * 1e6:.0f} µs, "
          f"across {np.median(lat_across) * 1e3:.2f} ms (shaped {DELAY_MS} ms); bandwidth "
          f"within {np.median(bw_in) * 8e-9:.2f} Gbit/s, across "
          f"{np.median(bw_across) * 8e-6:.1f} Mbit/s (shaped {RATE_MBIT}); "
          f"{crossed / 2**20:.1f} MiB crossed regions")
    # every packet across is held >= the delay, so this floor is exact, not a timing guess
    assert (lat_across >= 0.95 * DELAY_MS * 1e-3).all(), lat_across
    # inside a region nothing is held: the regions differ by the delay (a busy node adds
    # scheduling time to both alike), and no pair inside is as slow as any pair across
    assert np.median(lat_across) - np.median(lat_in) >= 0.8 * DELAY_MS * 1e-3, (lat_in, lat_across)
    assert lat_in.max() < lat_across.min(), (lat_in, lat_across)
    # htb caps the rate across; within a region the veth is many times faster
    assert (bw_across <= 1.15 * rate_bytes_per_s).all(), bw_across
    assert (bw_across >= 0.5 * rate_bytes_per_s).all(), bw_across
    assert np.median(bw_in) >= 4 * rate_bytes_per_s, bw_in
    assert bw_in.min() > bw_across.max(), (bw_in, bw_across)


def test_hpccloud_probe_discovers_the_shaped_regions(regional_net, tmp_path):
    net = regional_net
    out = tmp_path / "profile.json"
    # the embedded default topology splits 4 ranks 2 + 2: the same as the shaped network
    res = _run(net, [sys.executable, "-m", "hpccloud", "probe", "--json", str(out),
                     "--sizes", "8,4096,65536", "--speed-seconds", "0.1"])
    doc = json.loads(out.read_text())
    found = doc["discovered_regions"]
    assert found["rank_region"] == [0, 0, 1, 1], found
    assert found["agree_with_declared"] is True and found["disagreements"] == []
    assert found["separation"] > 10, found
    assert "discovered from measured links" in res.stdout
    assert "warning" not in res.stderr
    # from the measured matrices alone, against the network as shaped (not the topology file)
    again = discover_regions(doc["alpha_s"], doc["beta_bytes_per_s"])
    assert compare_regions(again.rank_region, net.rank_region).agree


def test_teardown_after_a_failure_leaves_nothing():
    _prerequisites_or_skip()
    net = netns.RegionalNet((1, 1), delay_ms=1.0, rate_mbit=50.0)
    with pytest.raises(RuntimeError, match="boom"), net:
        assert len(net.helper_pids) == 2 or net.use_netem
        raise RuntimeError("boom")
    assert net.leftovers() == []
    assert net.teardown_s < 5.0


def test_script_cleans_up_when_killed(tmp_path):
    """``python -m hpccloud.testing.netns`` removes its network on SIGTERM mid-run."""
    _prerequisites_or_skip()
    tag = f"t{os.getpid() % 100000}"
    names = [f"{netns.NS_PREFIX}-{tag}-hub", f"{netns.NS_PREFIX}-{tag}-r0",
             f"{netns.NS_PREFIX}-{tag}-r1"]
    proc = subprocess.Popen([sys.executable, "-m", "hpccloud.testing.netns", "--regions", "1,1",
                             "--delay-ms", "1", "--tag", tag, "--timeout", "60", "--",
                             "sleep", "30"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env(2))
    try:
        deadline = time.monotonic() + 60
        while not _netns_exist(names) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert _netns_exist(names), "the script never built its network"
        time.sleep(1.0)  # let the ranks start inside the namespaces
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (proc.returncode, out, err)
    assert "left behind: nothing" in out, (out, err)
    present = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                 timeout=10).stdout.split())
    assert not present & set(names)
    # no helper or rank of that network still running
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, timeout=10).stdout
    assert f"{netns.NS_PREFIX}-{tag}-" not in ps  # ranks: ip netns exec <ns> ...
    assert f"hpcc-netns-{tag}-" not in ps  # helpers run from the network's temp dir


def _netns_exist(names) -> bool:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            timeout=10).stdout.split()
    return all(n in listed for n in names)
