"""``hpccloud bench kernels``: table, atomic JSON with the agreed fields, clear errors."""

import json
import subprocess

from hpccloud import __version__
from hpccloud.cli import main

FIELDS = {"kernel", "n", "seconds", "units_per_s", "gbytes_per_s", "numpy_speedup",
          "bandwidth_ratio"}


def check_provenance(prov: dict, threads: int | None) -> None:
    """Machine, versions, commit, load before/after: every benchmark JSON carries them."""
    m = prov["machine"]
    assert m["cpu_model"] and m["logical_cpus"] >= 1 and m["cpus_available"] >= 1
    assert m["memory_bytes"] > 2**20
    sw = prov["software"]
    assert sw["hpccloud"] == __version__
    assert sw["numpy"] and sw["numba"] and sw["mpi4py"] and sw["python"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout: the commit the numbers came from
        assert sw["git"]["commit"] == head.stdout.strip()
    assert len(prov["load_average_before"]) == 3 and len(prov["load_average_after"]) == 3
    assert prov["started_utc"] <= prov["finished_utc"]
    assert prov["threads"] == threads
    assert "busy_warning" in prov


def test_bench_kernels_json(tmp_path, capsys):
    out = tmp_path / "sub" / "bench.json"
    rc = main(["bench", "kernels", "--kernels", "triad,stencil2d,mandelbrot", "--scale", "0.002",
               "--repeats", "2", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "x numpy" in text and "stencil2d" in text
    doc = json.loads(out.read_text())
    assert doc["kind"] == "hpccloud-bench-kernels"
    check_provenance(doc["provenance"], threads=doc["results"][0]["threads"])
    rows = doc["results"]
    assert [r["kernel"] for r in rows] == ["triad", "stencil2d", "mandelbrot"]
    for r in rows:
        assert FIELDS <= set(r)
        assert r["seconds"] > 0 and r["units_per_s"] > 0 and r["numpy_speedup"] > 0
        assert r["n"] > 0
        sp = r["seconds_spread"]
        assert sp["n"] == 2 and sp["min"] <= sp["median"] <= sp["max"] and sp["iqr"] >= 0
        assert sp["median"] == r["seconds"]
    by = {r["kernel"]: r for r in rows}
    assert by["mandelbrot"]["bandwidth_ratio"] is None
    assert by["triad"]["bandwidth_ratio"] > 0
    assert abs(by["triad"]["gbytes_per_s"] - by["triad"]["units_per_s"] * 24 / 1e9) < 1e-6
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp")]


def test_bench_kernels_unknown_kernel(tmp_path, capsys):
    out = tmp_path / "b.json"
    rc = main(["bench", "kernels", "--kernels", "triad,warp_drive", "--json", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "warp_drive" in err and "triad" in err
    assert not out.exists()


def test_bench_needs_a_target(capsys):
    try:
        main(["bench"])
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("bench without a target must be a usage error")
    assert "kernels" in capsys.readouterr().err
