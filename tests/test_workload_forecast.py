"""The workloads' own model of their work: mandelbrot's sampled estimate, the cached
forecast, and the rebalance's next-window work scaled from what was measured."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from hpccloud.runner.options import RunConfig
from hpccloud.runner.rebalance import FORECAST_STEPS, changing_units, workload_forecast
from hpccloud.runner.setup import estimate_steps
from hpccloud.runner.window import Window
from hpccloud.workloads import make_workload


def _ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x))


@pytest.mark.parametrize("params,step", [({}, 0), ({}, 25), ({}, 59), ({"grid": 6, "n": 240, "zoom": 0.9}, 7)])
def test_mandelbrot_estimate_follows_the_iterations_the_tiles_really_take(params, step):
    wl = make_workload("mandelbrot", params)
    shards = wl.shard_map(4).shards
    est = np.array([wl.work_estimate(s, step) for s in shards])
    real = np.array([wl.compute(s, wl.initial(s), step)[1] for s in shards], np.float64)
    assert np.corrcoef(est, real)[0, 1] > 0.99
    # Spearman: the cheap tiles' order comes from few samples, the costly ones' must hold
    assert np.corrcoef(_ranks(est), _ranks(real))[0, 1] > 0.9
    top = np.argsort(real)[-len(real) // 4:]  # the costliest quarter is estimated above the median
    assert est[top].min() >= np.median(est)


def test_mandelbrot_estimate_is_in_the_speed_probes_units():
    """A tile that costs what the probe's mixed view costs per pixel is worth its pixels."""
    from kernels.mandelbrot import make_inputs

    x0, x1, y0, y1, _, _, max_iter = make_inputs(1 << 12)
    wl = make_workload("mandelbrot", {"n": 64, "grid": 1, "max_iter": max_iter,
                                      "centre_x": (x0 + x1) / 2, "centre_y": (y0 + y1) / 2})
    wl.params["zoom"] = 1.0  # one tile whose view is near the probe's (half-width 1.5 vs 1.3)
    (shard,) = wl.shard_map(1).shards
    assert wl.work_estimate(shard, 0) == pytest.approx(64 * 64, rel=0.35)
    assert wl._probe_cost() > 1.0


@pytest.mark.parametrize("name,params", [
    ("stencil2d", {"n": 256, "grid": 4}), ("kmeans", {"n": 20_000}),
    ("particles", {"n": 20_000, "grid": 4}), ("spmv", {"n": 20_000, "shards": 8}),
])
def test_initial_estimate_is_the_work_the_kernel_reports(name, params):
    """What the initial placement plans on is in the units the kernel's first step reports
    (the speed probe's): particles' tiles and spmv's row blocks once carried 1 per tile and
    their rows, 1/3,000 and 1/16 of it, and topo priced compute in microseconds."""
    from mpi4py import MPI

    wl = make_workload(name, params)
    m = wl.shard_map(1)
    est = wl.work_forecast(m.shards, [0])[0]
    local = {s.id: wl.initial(s) for s in m.shards}
    wl.begin_step(MPI.COMM_SELF, m, local, 0)
    real = np.array([wl.compute(s, local[s.id], 0)[1] for s in m.shards], np.float64)
    np.testing.assert_allclose(est, real, rtol=0.02)  # spmv: rows x mean_row, lengths rounded


def test_forecast_is_every_shard_at_every_step_each_step_estimated_once():
    wl = make_workload("stencil2d", {"n": 64, "grid": 4})
    shards = wl.shard_map(2).shards
    calls = []
    wl.work_estimate = lambda s, t: calls.append((s.id, t)) or float(s.id + 100 * t)
    got = wl.work_forecast(shards, [3, 5])
    assert got.shape == (2, 16)
    assert got[1, 2] == 502.0
    n = len(calls)
    assert wl.work_forecast(shards, [5, 6])[0].tolist() == got[1].tolist()
    assert len(calls) == n + 16  # only step 6 was new
    assert 3 not in wl._forecasts  # steps before the earliest asked for are dropped


def test_workloads_without_a_model_say_so():
    assert make_workload("stencil2d").forecasts_work and make_workload("mandelbrot").forecasts_work
    for name in ("kmeans", "spmv", "particles"):
        assert not make_workload(name).forecasts_work


def _job(wl, work, steps=60):
    m = wl.shard_map(2).with_work_units(work)
    return SimpleNamespace(wl=wl, shard_map=m, cfg=RunConfig(steps=steps, rebalance_every=10))


def _hot_spot_window():
    """A stencil with a moving hot spot, a measured window of steps 10-19, and the model's
    estimate of every shard at the FORECAST_STEPS steps of each window (spread)."""
    wl = make_workload("stencil2d", {"n": 128, "grid": 8, "period": 16})
    window = Window()
    for t in range(10, 20):
        window.add({"step": t}, {})
    est = np.array([[wl.work_estimate(s, t) for s in wl.shard_map(2).shards]
                    for t in (10, 14, 19, 20, 24, 29)])
    return wl, window, est


def test_next_window_work_is_the_measured_work_scaled_by_the_models_change():
    wl, window, est = _hot_spot_window()
    then = est[:3].mean(axis=0)
    measured = then * np.random.default_rng(1).uniform(0.9, 1.1, then.size)  # noisy, in step
    ahead = workload_forecast(_job(wl, measured), window, step=19, horizon=10)
    assert len(ahead) == 1 + FORECAST_STEPS
    want = np.maximum(0.0, measured + changing_units(then, measured) * (est[3:] - then))
    assert np.allclose(ahead[1:], want)
    assert np.allclose(ahead[0], want.mean(axis=0))
    # the hot spot moves on: some shard's work changes, and none is made up from nothing
    assert not np.allclose(ahead[0], measured)


def test_only_the_part_of_the_work_the_model_sees_changes():
    # measured = a constant per shard (dispatch) + k x the model's estimate: the forecast
    # moves only the k part, so a tile entering the hot spot is not forecast 7x its work
    wl, window, est = _hot_spot_window()
    measured = 3.0 + 0.5 * est[:3].mean(axis=0)
    ahead = workload_forecast(_job(wl, measured), window, step=19, horizon=10)
    assert np.allclose(ahead[1:], 3.0 + 0.5 * est[3:])
    # no spread in the estimate: the two parts cannot be told apart, all of it scales
    assert changing_units(np.full(4, 2.0), np.array([1.0, 2.0, 3.0, 6.0])) == 1.5
    assert changing_units(np.zeros(3), np.ones(3)) == 0.0


def test_no_forecast_without_a_model_or_without_steps_left():
    window = Window()
    window.add({"step": 5}, {})
    km = make_workload("kmeans", {"n": 600, "shards": 4})
    assert workload_forecast(_job(km, np.ones(4)), window, step=5, horizon=10) is None
    st = make_workload("stencil2d", {"n": 64, "grid": 4})
    assert workload_forecast(_job(st, np.ones(16), steps=6), window, step=5, horizon=10) is None


def test_initial_placement_is_planned_on_the_steps_it_holds_for():
    assert estimate_steps(RunConfig(steps=60, rebalance_every=10), 0) == [0, 1, 2]
    assert estimate_steps(RunConfig(steps=60, rebalance_every=4), 0) == [0, 1, 2, 3]
    assert estimate_steps(RunConfig(steps=1, rebalance_every=10), 0) == [0]
    assert estimate_steps(RunConfig(steps=60, rebalance_every=10), 35) == [35, 36, 38, 39]


def test_the_speed_probe_runs_the_kernel_on_the_workloads_own_inputs(monkeypatch):
    """A k-means point costs k·d multiply-adds: the probe's points carry the run's k and d
    (with the kernel's own 8 and 4 the probe rated k=64, d=16 points 24x too fast, and the
    initial placement predicted a 4.4 ms step that took 143 ms)."""
    import dataclasses

    from mpi4py import MPI

    import kernels
    from hpccloud.measure.probe import probe_speed

    spec, seen = kernels.get("kmeans"), []

    def make_inputs(n_units, dtype=np.float64, seed=0, **kw):
        seen.append(kw)
        return spec.make_inputs(n_units, dtype, seed=seed, **kw)

    monkeypatch.setattr(kernels, "get", lambda name: dataclasses.replace(spec, make_inputs=make_inputs))
    wl = make_workload("kmeans", {"k": 64, "d": 16})
    model = probe_speed(MPI.COMM_SELF, "kmeans", n_units=1 << 12, window_s=0.01, inputs=wl.probe_inputs())
    assert seen == [{"k": 64, "d": 16}]
    assert model.provenance == "measured" and model.rate("kmeans")[0] > 0
    assert make_workload("stencil2d").probe_inputs() == {}  # the kernel's own inputs by default
