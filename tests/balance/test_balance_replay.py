"""``benchmarks/replay_windows.py`` on small sizes, so the benchmark cannot rot."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def replay_windows():
    spec = importlib.util.spec_from_file_location("replay_windows",
                                                  os.path.join(ROOT, "benchmarks", "replay_windows.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("workload", ["mandelbrot", "stencil2d"])
def test_replay_prints_every_planner_and_charges_the_real_work(replay_windows, workload, tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert replay_windows.main(["--workload", workload, "--layout", "3+1", "--steps", "12", "--window", "4",
                                "--noise", "0.05", "--param", "n=64", "--param", "grid=4",
                                "--json", str(out)]) == 0
    rows = {r["planner"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == set(replay_windows.PLANNERS)
    assert "topo-mean" in capsys.readouterr().out
    assert rows["static"]["moves"] == [0, 0]
    assert min(r["ratio_to_best"] for r in rows.values()) == 1.0
    # the first window runs on the starting map for everyone
    assert len({r["window_step_s"][0] for r in rows.values()}) == 1
    # and what static is charged is the real work of its own map
    W, sm = replay_windows.work_per_step(workload, 4, 12, {"n": "64", "grid": "4"})
    assert W.shape == (12, 16) and np.all(W > 0)


def test_replay_refuses_fewer_steps_than_two_windows(replay_windows):
    with pytest.raises(SystemExit):
        replay_windows.main(["--steps", "5", "--window", "4"])
