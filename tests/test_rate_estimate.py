"""The planner's rank speeds: window rates shrunk towards the probe's by their own scatter."""

from __future__ import annotations

import numpy as np
import pytest

from hpccloud.measure.speed import RATE_WINDOWS, RateEstimate


def _rel(x):
    x = np.asarray(x, np.float64)
    return x / np.exp(np.mean(np.log(x)))


def _windows(true, sigma, n, rng):
    return [np.asarray(true, np.float64) * np.exp(rng.normal(0.0, sigma, len(true))) for _ in range(n)]


def test_speeds_that_persist_are_kept():
    rng = np.random.default_rng(3)
    true = np.array([1.0, 1.0, 2.0, 3.0])
    est = RateEstimate(np.ones(4))  # a probe that saw equal ranks: the windows must win
    for r in _windows(true, 0.02, 6, rng):
        out = est.add(r)
    assert est.shrink > 0.95
    assert _rel(out) == pytest.approx(_rel(true), rel=0.03)


def test_differences_within_the_noise_shrink_towards_the_probe():
    """Equal ranks whose window rates scatter 20 %: the estimate is nearer the truth than
    the newest window, over many seeds (the median error less than half the window's)."""
    errs_est, errs_win = [], []
    for seed in range(60):
        rng = np.random.default_rng(seed)
        est = RateEstimate(np.full(4, 5.0))
        for r in _windows(np.ones(4), 0.2, 5, rng):
            out = est.add(r)
        errs_est.append(np.sqrt(np.mean(np.log(_rel(out)) ** 2)))
        errs_win.append(np.sqrt(np.mean(np.log(_rel(r)) ** 2)))
    assert np.median(errs_est) < 0.5 * np.median(errs_win)


def test_the_first_window_is_taken_as_measured():
    est = RateEstimate(np.array([1.0, 1.0, 1.0]))
    r = np.array([2.0, 3.0, 4.0])
    assert est.add(r).tolist() == r.tolist() and est.shrink == 1.0 and np.isnan(est.noise)


@pytest.mark.parametrize("prior", [None, np.array([1.0, np.nan]), np.array([1.0, 0.0])])
def test_without_a_measured_prior_every_window_is_taken_as_measured(prior):
    est = RateEstimate(prior)
    for r in ([1.0, 2.0], [2.0, 1.0], [1.0, 2.0]):
        assert est.add(np.array(r)).tolist() == r


def test_a_rank_that_slows_down_is_followed_at_once():
    rng = np.random.default_rng(7)
    est = RateEstimate(np.ones(4))
    for r in _windows(np.ones(4), 0.02, 4, rng):
        est.add(r)
    true = np.array([1.0, 1.0, 0.5, 1.0])  # another job arrived on rank 2's core
    out = est.add(true * np.exp(rng.normal(0.0, 0.02, 4)))
    assert _rel(out) == pytest.approx(_rel(true), rel=0.05)


def test_the_level_comes_from_the_newest_window():
    rng = np.random.default_rng(11)
    est = RateEstimate(np.array([1.0, 2.0, 4.0]))
    for r in _windows([1.0, 2.0, 4.0], 0.05, 4, rng):
        est.add(r)
    out = est.add(np.array([3.0, 6.0, 12.0]))  # the machine got 3x faster for every rank
    assert np.exp(np.mean(np.log(out))) == pytest.approx(6.0, rel=0.05)


def test_a_rank_without_shards_gets_the_probe_shape_at_the_window_level():
    est = RateEstimate(np.array([1.0, 2.0, 4.0]))
    est.add(np.array([2.0, 4.0, 8.0]))
    out = est.add(np.array([2.0, np.nan, 8.0]))
    assert np.all(np.isfinite(out)) and out[1] == pytest.approx(4.0)


def test_only_the_last_windows_count():
    est = RateEstimate(np.ones(2))
    for _ in range(3 * RATE_WINDOWS):
        est.add(np.array([1.0, 2.0]))
    assert len(est.rows) == RATE_WINDOWS


def test_the_replay_benchmark_scores_kept_reports(tmp_path, capsys):
    """``benchmarks/rate_replay.py`` on synthetic reports of ranks whose window rates are
    noise around equal speeds: the estimate is scored nearer than the window."""
    import json
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    from rate_replay import main

    rng = np.random.default_rng(5)
    for k in range(8):
        plans = [{"rates_units_per_s": {"planner": (np.exp(rng.normal(0.0, 0.2, 4))).tolist()}}
                 for _ in range(6)]
        rep = {"initial_placement": {"speed": {"reference_kernel": "stencil2d",
                                               "units_per_s": {"stencil2d": [1.0] * 4}}}, "plans": plans}
        (tmp_path / f"stencil2d-2+2-topo-{k}.json").write_text(json.dumps(rep))
    (tmp_path / "stencil2d-2+2-static-0.json").write_text(json.dumps({"plans": []}))  # no probe: left out
    assert main([str(tmp_path), "--json", str(tmp_path / "out.json")]) == 0
    (row,) = json.loads((tmp_path / "out.json").read_text())
    assert (row["workload"], row["layout"], row["plans"]) == ("stencil2d", "2+2", 8 * 4)
    assert row["estimate_rms"] < row["window_rms"]
    assert "8 runs" in capsys.readouterr().out
