"""``benchmarks/balance_matrix.py --quick`` on one cell, so the benchmark cannot rot."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest

from hpccloud.testing.mpi_pytest import run_group

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "benchmarks", "balance_matrix.py")


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux) to pin ranks")
def test_balance_matrix_quick_one_cell(tmp_path):
    out = tmp_path / "rows.json"
    res = run_group([sys.executable, SCRIPT, "--quick", "--workloads", "stencil2d", "--layouts", "2+1",
                     "--balancers", "topo", "--json", str(out)], 240,
                    env={**os.environ, "PYTHONPATH": ROOT})
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}"
    rows = json.loads(out.read_text())
    assert len(rows) == 1
    row = rows[0]
    for key in ("workload", "layout", "balancer", "total_s", "busy_max_over_mean", "core_busy_max_over_mean",
                "busy_per_core_max_over_mean", "step_pred_err", "migration_pred_err", "total_spread", "total_vs_best_other"):
        assert key in row, key
    assert (row["workload"], row["layout"], row["balancer"], row["runs"]) == ("stencil2d", "2+1", "topo", 1)
    assert row["total_s"] > 0 and row["busy_max_over_mean"] >= 1.0 and row["core_busy_max_over_mean"] >= 1.0
    assert row["busy_per_core_max_over_mean"] >= 1.0
    assert "stencil2d  2+1    topo" in res.stdout


def test_balance_matrix_model_errors_from_a_report():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from balance_matrix import cells, model_errors

    rep = {"plans": [{"makespan_after_s": 1.0, "achieved_step_s_after": 2.0, "migration_s": 0.1,
                      "achieved_migration_s": 0.2, "n_moves": 3},
                     {"makespan_after_s": 1.0, "achieved_step_s_after": 1.25, "migration_s": 0.0, "n_moves": 0},
                     {"makespan_after_s": 1.0, "achieved_step_s_after": 0.8, "migration_s": 0.3,
                      "achieved_migration_s": 0.2, "n_moves": 1}]}
    step, mig = model_errors(rep)
    # the first plan is left out of both, as the run's summary does: the models were not the run's yet
    assert step == pytest.approx(0.225)
    assert mig == pytest.approx(0.5)  # the third plan's; a plan that did not move has no migration
    runs = [{"workload": "w", "layout": "l", "balancer": b, "total_s": t, "busy_max_over_mean": 1.0,
             "step_pred_err": 0.1, "migration_pred_err": 0.2, "bytes_moved": 0}
            for b, t in (("static", 2.0), ("topo", 1.0), ("static", 4.0), ("topo", 1.5))]
    got = {r["balancer"]: r for r in cells(runs)}
    assert got["static"]["total_s"] == 3.0 and got["topo"]["total_vs_static"] == pytest.approx(1.25 / 3.0)
    assert got["static"]["total_s_runs"] == [2.0, 4.0] and got["static"]["total_spread"] == pytest.approx(2.0 / 3.0)
    assert got["topo"]["total_spread"] == pytest.approx(0.5 / 1.25)
    # against the best other balancer in the layout: topo's over static's, static's over topo's
    assert got["topo"]["total_vs_best_other"] == pytest.approx(1.25 / 3.0)
    assert got["static"]["total_vs_best_other"] == pytest.approx(3.0 / 1.25)
