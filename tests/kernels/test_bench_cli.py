"""``hpccloud bench kernels``: table, atomic JSON with the agreed fields, clear errors."""

import json

from hpccloud.cli import main

FIELDS = {"kernel", "n", "seconds", "units_per_s", "gbytes_per_s", "numpy_speedup",
          "bandwidth_ratio"}


def test_bench_kernels_json(tmp_path, capsys):
    out = tmp_path / "sub" / "bench.json"
    rc = main(["bench", "kernels", "--kernels", "triad,stencil2d,mandelbrot", "--scale", "0.002",
               "--repeats", "2", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "x numpy" in text and "stencil2d" in text
    rows = json.loads(out.read_text())
    assert [r["kernel"] for r in rows] == ["triad", "stencil2d", "mandelbrot"]
    for r in rows:
        assert FIELDS <= set(r)
        assert r["seconds"] > 0 and r["units_per_s"] > 0 and r["numpy_speedup"] > 0
        assert r["n"] > 0
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
