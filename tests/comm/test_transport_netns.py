"""The transport between ranks in separate network namespaces: bytes leave the host.

Needs root (see tests/test_netns.py; skipped otherwise, with the reason). Two
regions of one rank each, no delay, 2 Gbit/s: the default policy must hash
(``xxh3-64``), a sealed move must rely on AES-GCM alone, and a byte damaged in
flight must be caught on every rank on both routes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from hpccloud.testing import netns
from hpccloud.testing.mpi_pytest import child_env, json_records

CHILD = Path(__file__).with_name("netns_transport_child.py")


def test_cross_host_moves_are_hashed_and_corruption_caught_everywhere():
    if os.geteuid() != 0:
        pytest.skip("NOT RUN: network namespaces need root")
    missing = netns.ensure_prerequisites()  # installed with apt-get when missing (root)
    if missing:
        pytest.skip("NOT RUN: " + "; ".join(missing))
    with netns.RegionalNet((1, 1), delay_ms=0.0, rate_mbit=2000.0) as net:
        res = net.run_mpi([sys.executable, str(CHILD)], timeout_s=120, env=child_env(2))
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    lines = json_records(res.stdout)
    assert sorted(d["rank"] for d in lines) == [0, 1], res.stdout
    for d in lines:
        assert d["protection"] == ["xxh3-64", "aes-gcm"], d
        clear, sealed = d["caught"]
        assert clear and "shard 0" in clear and "(xxh3-64)" in clear and "checksum mismatch" in clear
        assert sealed and "(aes-gcm)" in sealed and "AES-GCM authentication failed" in sealed
        if "intact" in d:
            assert d["intact"], d
    assert lines[0]["caught"] == lines[1]["caught"]  # the same error on every rank
