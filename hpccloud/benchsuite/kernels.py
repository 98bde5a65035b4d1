"""Kernel benchmarks: each kernel vs its numpy twin and vs a same-run bandwidth reference.

``hpccloud bench kernels [--json OUT]`` times every registered kernel (or
``--kernels a,b``) on inputs from its ``make_inputs`` and prints one row per
kernel: size (work units), median time, rate (units/s), GB/s
(``rate × bytes_per_unit``), speed-up over the numpy reference, and — for
memory-bound kernels — the ratio of its GB/s to the bandwidth reference.

Bandwidth reference: the Numba STREAM copy kernel ``stream_copy`` (``a[:] = b``,
16 bytes per element, 2²⁴ float64 elements = 128 MiB per array, far beyond the
caches) run **in the same process at the same Numba thread count, interleaved
with the kernel under test**: each repeat times the kernel, its numpy twin and
the copy back to back, so minute-to-minute bandwidth drift on a shared machine
hits both sides of the ratio alike. A copy is the simplest loop that reaches
the machine's sustainable bandwidth with the same code generator, so
``bandwidth_ratio`` says how close a kernel gets to what Numba can stream.
For ``stencil2d``, ``bytes_per_unit`` = 16 (one read, one write per cell), so
its ratio is the ratio to its bandwidth bound.

All figures are medians over ``--repeats`` after one warm-up call (which also
compiles or loads the kernel). Kernels that accept ``out=`` get a
pre-allocated output (as the runner calls them); so does their numpy twin.

JSON (``--json OUT``, written atomically): ``{"kind": "hpccloud-bench-kernels",
"provenance": {...}, "results": [...]}`` (provenance: see
:mod:`hpccloud.benchsuite.provenance`); each result has ``kernel``,
``dtype``, ``n``, ``seconds``, ``units_per_s``, ``gbytes_per_s``,
``numpy_seconds``, ``numpy_speedup``, ``bandwidth_ref_gbytes_per_s``,
``bandwidth_ratio`` (null where the kernel is not memory-bound), ``threads``,
``repeats`` and the spread (n, min, q1, median, q3, max, iqr) of the kernel's,
the numpy twin's and the reference's seconds (``*_spread``).
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any, cast

import numpy as np

from hpccloud.benchsuite.provenance import spread
from hpccloud.errors import InvalidArgument

# work units per kernel at --scale 1: every array well beyond the caches, numpy
# twin at most about a second.
DEFAULT_UNITS = {
    "triad": 1 << 24,
    "axpy": 1 << 24,
    "stream_copy": 1 << 24,
    "sum": 1 << 24,
    "dot": 1 << 24,
    "norm2": 1 << 24,
    "stencil2d": 1 << 24,
    "histogram": 1 << 24,
    "spmv": 1 << 23,
    "kmeans": 1 << 20,
    "particles": 1 << 17,
    "particles_route": 1 << 20,
    "mandelbrot": 1 << 18,
}
FALLBACK_UNITS = 1 << 20
BANDWIDTH_UNITS = 1 << 24
# kernels whose signature has out= (the runner passes a pre-allocated output)
TAKES_OUT = {"triad", "axpy", "stream_copy", "stencil2d", "spmv"}


def add_arguments(parser) -> None:
    parser.add_argument("--json", metavar="OUT", default=None,
                        help="also write the results as a JSON list to OUT (atomically)")
    parser.add_argument("--kernels", metavar="A,B", default=None,
                        help="comma-separated kernel names (default: all registered)")
    parser.add_argument("--repeats", type=int, default=7, metavar="N",
                        help="timed repeats after the warm-up call (default 7); medians are reported")
    parser.add_argument("--scale", type=float, default=1.0, metavar="F",
                        help="multiply the default sizes by F (e.g. 0.01 for a quick smoke run)")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                        help="element type (kernels that lack it are skipped; default float64)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="Numba threads (default: NUMBA_NUM_THREADS, i.e. all cores)")


def _call(fn, args, out):
    return fn(*args) if out is None else fn(*args, out=out)


def _timed_samples(fns, repeats: int) -> list[list[float]]:
    """Interleave the callables ``repeats`` times; the seconds of every call of each."""
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            samples[k].append(time.perf_counter() - t0)
    return samples


def bench_kernel(spec, n_units: int, dtype, repeats: int, copy_src, copy_dst) -> dict:
    """Time ``spec`` against its numpy twin and the copy reference; one result row."""
    from kernels.stream import stream_copy

    args = spec.make_inputs(n_units, dtype, 0)
    out = out_ref = None
    first = spec.kernel(*args)  # warm-up (compile / cache load, first touch)
    if spec.name in TAKES_OUT:
        out, out_ref = np.empty_like(first), np.empty_like(first)
    _call(spec.reference, args, out_ref)  # warm-up
    stream_copy(copy_src, out=copy_dst)
    samples = _timed_samples(
        [lambda: _call(spec.kernel, args, out), lambda: _call(spec.reference, args, out_ref),
         lambda: stream_copy(copy_src, out=copy_dst)], repeats)
    t_kernel, t_numpy, t_copy = (statistics.median(s) for s in samples)
    units = float(spec.work_units(*args))
    itemsize_scale = np.dtype(dtype).itemsize / 8.0
    gbytes = units * spec.bytes_per_unit * itemsize_scale / t_kernel / 1e9
    ref_gbytes = 16.0 * copy_src.size * copy_src.itemsize / 8.0 / t_copy / 1e9
    return {
        "kernel": spec.name,
        "dtype": np.dtype(dtype).name,
        "n": units,
        "seconds": t_kernel,
        "units_per_s": units / t_kernel,
        "gbytes_per_s": gbytes,
        "numpy_seconds": t_numpy,
        "numpy_speedup": t_numpy / t_kernel,
        "bandwidth_ref_gbytes_per_s": ref_gbytes,
        "bandwidth_ratio": gbytes / ref_gbytes if spec.memory_bound else None,
        "repeats": repeats,
        # spread of the seconds (min, quartiles, median, max): how far to trust the medians
        "seconds_spread": spread(samples[0]),
        "numpy_seconds_spread": spread(samples[1]),
        "bandwidth_ref_seconds_spread": spread(samples[2]),
    }


def format_table(rows: list[dict]) -> str:
    head = (f"{'kernel':<12} {'dtype':<8} {'size':>10} {'time':>10} {'rate':>14} "
            f"{'GB/s':>7} {'x numpy':>8} {'x bw-ref':>9} {'ref GB/s':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = "-" if r["bandwidth_ratio"] is None else f"{r['bandwidth_ratio']:.2f}"
        lines.append(
            f"{r['kernel']:<12} {r['dtype']:<8} {r['n']:>10.4g} {r['seconds'] * 1e3:>8.3f}ms "
            f"{r['units_per_s']:>10.4g} u/s {r['gbytes_per_s']:>7.2f} {r['numpy_speedup']:>8.2f} "
            f"{ratio:>9} {r['bandwidth_ref_gbytes_per_s']:>9.2f}")
    return "\n".join(lines)


def run(args) -> int:
    import numba

    import kernels
    from hpccloud.compile import warm_up
    from hpccloud.io.atomic import write_json_atomic

    if args.repeats < 1:
        raise InvalidArgument(f"--repeats must be >= 1, got {args.repeats}")
    if not args.scale > 0:
        raise InvalidArgument(f"--scale must be > 0, got {args.scale}")
    if args.threads is not None:
        if args.threads < 1:
            raise InvalidArgument(f"--threads must be >= 1, got {args.threads}")
        numba.set_num_threads(min(args.threads, cast(Any, numba.config).NUMBA_NUM_THREADS))
    names = kernels.names() if not args.kernels else [s.strip() for s in args.kernels.split(",")
                                                      if s.strip()]
    dtype = np.dtype(args.dtype)
    specs = [kernels.get(name) for name in names]  # unknown names: one clear error, up front
    specs = [s for s in specs if dtype in tuple(np.dtype(d) for d in s.dtypes)]
    warm_up([s.name for s in specs], dtypes=[dtype])

    threads = numba.get_num_threads()
    copy_n = max(1024, int(BANDWIDTH_UNITS * args.scale))
    copy_src = np.random.default_rng(1).standard_normal(copy_n).astype(dtype)
    copy_dst = np.empty_like(copy_src)
    rows = []
    print(f"hpccloud bench kernels: {threads} Numba thread(s), dtype {dtype.name}, median of "
          f"{args.repeats} after warm-up; bandwidth reference = Numba STREAM copy of "
          f"{copy_n} elements interleaved with each kernel", flush=True)
    for spec in specs:
        n_units = max(1, int(DEFAULT_UNITS.get(spec.name, FALLBACK_UNITS) * args.scale))
        row = bench_kernel(spec, n_units, dtype, args.repeats, copy_src, copy_dst)
        row["threads"] = threads
        rows.append(row)
        print(f"  {spec.name}: done", file=sys.stderr, flush=True)
    print(format_table(rows))
    if args.json:
        write_json_atomic(args.json, rows)
        print(f"wrote {args.json}")
    return 0
