"""pytest-benchmark suite: every kernel (Numba) against its numpy twin, and the memory-bound
ones against a bandwidth reference measured in the same run.

Run::

    NUMBA_NUM_THREADS=2 python -m pytest benchmarks/test_bench_kernels.py --benchmark-only \\
        --benchmark-group-by=group --benchmark-columns=median,iqr,rounds

Each kernel's group holds two rows, ``numba`` and ``numpy`` (compare their medians
for the speed-up). After the Numba row is timed, the test times the Numba STREAM
copy (the bandwidth reference, 16 bytes per element, same thread count) five
times and stores in ``extra_info``: ``gbytes_per_s`` (median), ``ref_gbytes_per_s``
and ``bandwidth_ratio``. ``hpccloud bench kernels`` prints the same ratios as a
table. ``HPCCLOUD_BENCH_SCALE`` scales the sizes (default 1; with
``--benchmark-disable`` the sizes shrink 256× so the file is a quick smoke test).
"""

import os
import statistics
import time

import numpy as np
import pytest

import kernels
from hpccloud.benchsuite.kernels import BANDWIDTH_UNITS, DEFAULT_UNITS, TAKES_OUT
from kernels.stream import stream_copy

ROUNDS = 5


@pytest.fixture(scope="module")
def scale(request):
    s = float(os.environ.get("HPCCLOUD_BENCH_SCALE", "1"))
    if request.config.getoption("benchmark_disable", False):
        s /= 256
    return s


def _copy_gbytes_per_s(src, dst) -> float:
    times = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        stream_copy(src, out=dst)
        times.append(time.perf_counter() - t0)
    return 16.0 * src.size / statistics.median(times) / 1e9


@pytest.mark.parametrize("impl", ["numba", "numpy"])
@pytest.mark.parametrize("name", sorted(DEFAULT_UNITS))
def test_kernel(benchmark, name, impl, scale):
    spec = kernels.get(name)
    args = spec.make_inputs(max(1, int(DEFAULT_UNITS[name] * scale)), np.float64, 0)
    fn = spec.kernel if impl == "numba" else spec.reference
    kwargs = {}
    if name in TAKES_OUT:
        kwargs["out"] = np.empty_like(spec.kernel(*args))
    fn(*args, **kwargs)  # warm-up: compile or load from cache, first touch
    benchmark.group = name
    result = benchmark.pedantic(fn, args=args, kwargs=kwargs, rounds=ROUNDS, warmup_rounds=1)
    assert result is not None
    units = spec.work_units(*args)
    benchmark.extra_info["work_units"] = units
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable
        return
    median_s = stats.stats.median
    gbytes = units * spec.bytes_per_unit / median_s / 1e9
    benchmark.extra_info["units_per_s"] = units / median_s
    benchmark.extra_info["gbytes_per_s"] = gbytes
    if spec.memory_bound and impl == "numba":
        n = max(1024, int(BANDWIDTH_UNITS * scale))
        src = np.random.default_rng(1).standard_normal(n)
        ref = _copy_gbytes_per_s(src, np.empty_like(src))
        benchmark.extra_info["ref_gbytes_per_s"] = ref
        benchmark.extra_info["bandwidth_ratio"] = gbytes / ref
