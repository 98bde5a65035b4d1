"""Fitted link bandwidth vs ``python -m mpi4py.bench pingpong``, measured in the same run.

Acceptance of the link probe: for messages >= 1 MiB the β that ``hpccloud
probe`` fits is within 20 % of what mpi4py's own ping-pong reports on the same
machine. Memory bandwidth here drifts 30-50 % minute to minute, so the two are
run alternately ``--rounds`` times and medians are compared.

    python benchmarks/probe_vs_pingpong.py --ranks 4 --rounds 3 [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hpccloud.benchsuite import provenance  # noqa: E402
from hpccloud.commands.common import write_json_atomic  # noqa: E402
from hpccloud.testing.mpi_pytest import child_env, run_mpi  # noqa: E402

SIZES = (1 << 20, 2 << 20, 4 << 20)


def run_probe(ranks: int, out: str, timeout_s: float = 300) -> dict:
    res = run_mpi([sys.executable, "-m", "hpccloud", "probe", "--json", out], ranks, timeout_s,
                  env=child_env(ranks))
    if res.returncode != 0:
        raise SystemExit(f"hpccloud probe failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    with open(out) as fh:
        return json.load(fh)


def run_pingpong(timeout_s: float = 300) -> dict[int, float]:
    """Bytes/s by size from mpi4py's ping-pong between two ranks."""
    res = run_mpi([sys.executable, "-m", "mpi4py.bench", "pingpong", "-m", str(min(SIZES)),
                   "-n", str(max(SIZES)), "-l", "40", "-s", "5"], 2, timeout_s, env=child_env(2))
    if res.returncode != 0:
        raise SystemExit(f"mpi4py.bench pingpong failed:\n{res.stdout}\n{res.stderr}")
    out = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if parts and parts[0].isdigit():
            out[int(parts[0])] = float(parts[1]) * 1e6  # MB/s with MB = 1e6 bytes
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    before = provenance.Before.now()
    betas, pair01, pings = [], [], {n: [] for n in SIZES}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            prof = run_probe(args.ranks, os.path.join(tmp, f"p{k}.json"))
            beta = np.array([[np.nan if x is None else x for x in row]
                             for row in prof["beta_bytes_per_s"]])
            betas.append(float(np.nanmedian(beta)))
            pair01.append(float(beta[0, 1]))
            for n, bw in run_pingpong().items():
                if n in pings:
                    pings[n].append(bw)
    beta_med = statistics.median(betas)
    rows = []
    print(f"hpccloud probe ({args.ranks} ranks, {args.rounds} rounds): fitted beta, median over "
          f"pairs {beta_med / 1e9:.2f} GB/s (per round: "
          f"{', '.join(f'{b / 1e9:.2f}' for b in betas)}); pair 0->1 {statistics.median(pair01) / 1e9:.2f} GB/s")
    for n in SIZES:
        ping = statistics.median(pings[n])
        ratio = beta_med / ping
        rows.append({"bytes": n, "pingpong_bytes_per_s": ping, "probe_beta_bytes_per_s": beta_med,
                     "ratio": ratio, "within_20_percent": abs(ratio - 1) <= 0.2,
                     "pingpong_spread": provenance.spread(pings[n]),
                     "probe_beta_spread": provenance.spread(betas)})
        print(f"  {n:>9} B: mpi4py.bench pingpong {ping / 1e9:6.2f} GB/s   probe beta / pingpong = "
              f"{ratio:.2f}")
    overall = statistics.median(bw for n in SIZES for bw in pings[n])
    print(f"  all sizes >= 1 MiB: mpi4py.bench pingpong median {overall / 1e9:.2f} GB/s   probe beta / "
          f"pingpong = {beta_med / overall:.2f}")
    rows.append({"bytes": "all>=1MiB", "pingpong_bytes_per_s": overall, "probe_beta_bytes_per_s": beta_med,
                 "ratio": beta_med / overall, "within_20_percent": abs(beta_med / overall - 1) <= 0.2})
    doc = provenance.attach("probe-vs-pingpong", rows, before, threads=1, ranks=args.ranks)
    if doc["provenance"]["busy_warning"]:
        print(doc["provenance"]["busy_warning"], file=sys.stderr)
    if args.json:
        write_json_atomic(args.json, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
