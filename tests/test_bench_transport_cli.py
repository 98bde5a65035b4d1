"""`hpccloud bench transport` end to end under mpiexec (tiny sizes: a smoke test, not a timing)."""

import json
import sys

from hpccloud.testing.mpi_pytest import child_env, run_mpi


def test_bench_transport_json(tmp_path):
    out = tmp_path / "t.json"
    res = run_mpi([sys.executable, "-m", "hpccloud", "bench", "transport", "--sizes-mib", "0.25,1",
                   "--repeats", "2", "--warmup", "1", "--json", str(out)], 2, 180, env=child_env(2))
    assert res.returncode == 0, res.stderr
    rows = json.loads(out.read_text())
    assert [(r["bytes"], r["shards_per_move"], r["encrypted"]) for r in rows] == [
        (b, k, e) for k in (1, 8) for b in (1 << 18, 1 << 20) for e in (False, True)]
    for r in rows:
        assert r["ratio"] > 0 and r["raw_bytes_per_s"] > 0 and r["hpccloud_bytes_per_s"] > 0


def test_bench_transport_needs_two_ranks():
    res = run_mpi([sys.executable, "-m", "hpccloud", "bench", "transport"], 3, 120, env=child_env(3))
    assert res.returncode == 2
    assert res.stderr.count("exactly 2 ranks") == 1, res.stderr
