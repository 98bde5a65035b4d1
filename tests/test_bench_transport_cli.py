"""`hpccloud bench transport` end to end under mpiexec (tiny sizes: a smoke test, not a timing)."""

import json
import sys

from hpccloud.testing.mpi_pytest import child_env, run_mpi


def test_bench_transport_json(tmp_path):
    out = tmp_path / "t.json"
    res = run_mpi([sys.executable, "-m", "hpccloud", "bench", "transport", "--sizes-mib", "0.25,1",
                   "--repeats", "2", "--warmup", "1", "--json", str(out)], 2, 180, env=child_env(2))
    assert res.returncode == 0, res.stderr
    assert "KeyFileWarning" not in res.stderr, res.stderr  # the bench's key file is private
    doc = json.loads(out.read_text())
    assert doc["kind"] == "hpccloud-bench-transport"
    prov = doc["provenance"]  # machine, versions, load: see tests/kernels/test_bench_cli.py
    assert prov["ranks"] == 2 and prov["software"]["mpi_library"] and prov["machine"]["cpu_model"]
    assert len(prov["load_average_before"]) == 3 and len(prov["load_average_after"]) == 3
    rows = doc["results"]
    assert [(r["bytes"], r["shards_per_move"], r["encrypted"]) for r in rows] == [
        (b, k, e) for k in (1, 8) for b in (1 << 18, 1 << 20) for e in (False, True)]
    for r in rows:
        assert r["ratio"] > 0 and r["raw_bytes_per_s"] > 0 and r["hpccloud_bytes_per_s"] > 0
        assert r["ratio_verify_all"] > 0 and r["hpccloud_verify_all_s_median"] > 0
        # two ranks on one host, two regions: sealed with the key, else the header check only
        assert r["protection"] == ("aes-gcm" if r["encrypted"] else "header"), r
        assert not any(k.startswith("bare_") for k in r)  # only with --breakdown


def test_bench_transport_breakdown(tmp_path):
    """--breakdown times the bare piece stream (no hash, each side's hash, both) in the same rounds."""
    out = tmp_path / "t.json"
    res = run_mpi([sys.executable, "-m", "hpccloud", "bench", "transport", "--sizes-mib", "1,2.5",
                   "--repeats", "2", "--warmup", "1", "--batch", "1", "--breakdown",
                   "--json", str(out)], 2, 180, env=child_env(2))
    assert res.returncode == 0, res.stderr
    rows = json.loads(out.read_text())["results"]
    assert [(r["bytes"], r["encrypted"]) for r in rows] == [
        (b, e) for b in (1 << 20, 5 << 19) for e in (False, True)]
    names = ("pieces", "send_hash", "recv_hash", "checksummed", "header", "header_rounds")
    for r in rows:
        assert all(r[f"bare_{n}_ratio"] > 0 for n in names), r
    assert res.stdout.count("bare piece stream vs raw") == 2, res.stdout
    assert res.stdout.count("bare header-only route vs raw: header ") == 2, res.stdout


def test_bench_transport_needs_two_ranks():
    res = run_mpi([sys.executable, "-m", "hpccloud", "bench", "transport"], 3, 120, env=child_env(3))
    assert res.returncode == 2
    assert res.stderr.count("exactly 2 ranks") == 1, res.stderr


def test_bench_transport_bad_flush_size():
    res = run_mpi([sys.executable, "-m", "hpccloud", "bench", "transport", "--flush-mib", "-1"], 2, 120,
                  env=child_env(2))
    assert res.returncode == 2
    assert res.stderr.count("--flush-mib") == 1, res.stderr
