"""The run report's plots at any rank count: per rank up to 256 ranks, per region pair above."""

import numpy as np
import pytest

from hpccloud.measure.links import DENSE_JSON_MAX_RANKS, LinkModel
from hpccloud.report import PER_RANK_PLOT_MAX_RANKS, _link_matrices, write_plots


def _report(ranks: int, regions: int) -> dict:
    """A run report with what write_plots reads: links as the job writes them, steps, plans."""
    region = np.arange(ranks) * regions // ranks
    links = LinkModel(ranks, provenance="synthetic", rank_region=region, rank_node=np.arange(ranks))
    rng = np.random.default_rng(0)
    src = rng.integers(0, ranks, 4 * ranks)
    dst = (src + 1 + rng.integers(0, ranks - 1, src.size)) % ranks
    slow = region[src] != region[dst]
    links.set_pairs(src, dst, np.where(slow, 2e-3, 5e-6), np.where(slow, 1e8, 1e10))
    busy = rng.random((6, ranks)) * 1e-3
    steps = [{"step": k, "step_s": float(busy[k].max()) + 1e-4, "busy_s": busy[k].tolist()} for k in range(6)]
    plans = [{"after_step": 2, "makespan_after_s": float(busy[3].max()), "migration_s": 1e-3,
              "achieved_step_s_after": float(busy[3].max()), "achieved_migration_s": 2e-3,
              "predicted_rebalance_wall_s": 3e-3, "rebalance_wall_s": 4e-3}]
    return {"ranks": ranks, "links": links.to_json(), "steps": steps, "plans": plans,
            "config": {"balancer": "topo"}}


@pytest.mark.parametrize("ranks,regions", [(4, 2), (PER_RANK_PLOT_MAX_RANKS + 44, 3)])
def test_plots_are_written_at_any_rank_count(ranks, regions, tmp_path):
    rep = _report(ranks, regions)
    assert ("alpha_s" in rep["links"]) == (ranks <= DENSE_JSON_MAX_RANKS)
    paths = write_plots(rep, str(tmp_path))
    names = sorted(p.rsplit("/", 1)[-1] for p in paths)
    assert names == ["links.png", "load.png", "model.png", "timeline.png"]
    for p in paths:
        with open(p, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_links_above_the_dense_limit_are_medians_per_region_pair():
    rep = _report(PER_RANK_PLOT_MAX_RANKS + 44, 3)
    alpha, beta, unit = _link_matrices(rep["links"], rep["ranks"])
    assert unit == "region" and alpha.shape == beta.shape == (3, 3)
    off = ~np.eye(3, dtype=bool)
    np.testing.assert_allclose(alpha[off], 2e-3)
    np.testing.assert_allclose(beta[off], 1e8)
    np.testing.assert_allclose(np.diag(alpha), 5e-6)
    np.testing.assert_allclose(np.diag(beta), 1e10)


def test_small_runs_keep_the_per_rank_matrix():
    rep = _report(4, 2)
    alpha, beta, unit = _link_matrices(rep["links"], 4)
    assert unit == "rank" and alpha.shape == (4, 4) and np.isnan(alpha[0, 0])


def test_no_measured_pair_gives_a_blank_matrix():
    alpha, beta, unit = _link_matrices({"size": 300, "rank_region": [0] * 150 + [1] * 150, "pairs": []}, 300)
    assert unit == "region" and alpha.shape == (2, 2) and np.isnan(alpha).all() and np.isnan(beta).all()


@pytest.mark.parametrize("mutate", ["no-topology", "steps-null", "config-string"])
def test_report_command_refuses_a_report_of_another_layout_and_writes_no_plot(tmp_path, capsys,
                                                                              mutate):
    """It used to print a traceback (exit 1), after plots that rendered were written."""
    import json

    from hpccloud.cli import main
    from hpccloud.report import KIND

    rep = {**_report(4, 2), "kind": KIND}
    if mutate == "steps-null":
        rep["steps"] = None
    elif mutate == "config-string":
        rep["config"] = "topo"
    path = tmp_path / "rep.json"
    path.write_text(json.dumps(rep))
    assert main(["report", str(path), "--out", str(tmp_path / "plots")]) == 2
    err = capsys.readouterr().err
    assert "not laid out as a run report" in err and "Fix:" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == []
