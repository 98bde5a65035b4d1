"""The adapter from the runtime objects, and the ``simulate`` / ``plan`` commands."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from hpccloud.balance import plan, problem_from
from hpccloud.cli import main
from hpccloud.measure.links import LinkModel
from hpccloud.topology import read_topology_text, topology_from_text

# ---- small local fakes with the attribute names pinned in INTERFACES.md (tests only)


class FakeShardMap:
    def __init__(self, owners, classes):
        self._owners = np.asarray(owners, np.int64)
        self._classes = list(classes)

    def __len__(self):
        return self._owners.size

    def owners(self):
        return self._owners

    def work_units(self):
        return np.full(self._owners.size, 100.0)

    def nbytes(self):
        return np.full(self._owners.size, 1 << 20, np.int64)

    def data_classes(self):
        return self._classes

    def halo_edges(self):
        u = np.arange(self._owners.size - 1)
        return u, u + 1, np.full(u.size, 8192)


class FakePolicy:
    def __init__(self, topology):
        self.topology = topology

    def allowed_mask(self, data_classes):
        t = self.topology
        return np.array([[t.region_of(r) in t.data_classes[c].regions for r in range(t.size)]
                         for c in data_classes])


def default_topology(size):
    text, source = read_topology_text(None)
    return topology_from_text(text, source, size)


def fake_models(size, provenance="measured"):
    alpha = np.full((size, size), 1e-5)
    beta = np.full((size, size), 1e9)
    np.fill_diagonal(alpha, np.nan)
    np.fill_diagonal(beta, np.nan)
    links = LinkModel.synthetic(alpha, beta)
    links.provenance = provenance
    speed = SimpleNamespace(size=size, provenance=provenance, rate=lambda kernel=None: np.arange(1.0, size + 1))
    return links, speed


def test_problem_from_runtime_objects_keeps_eu_data_in_the_eu():
    topo = default_topology(4)  # ranks 0,1 eu-north; 2,3 us-east
    classes = ["public"] * 6 + ["eu-personal"] * 6
    smap = FakeShardMap([0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1], classes)
    links, speed = fake_models(4)
    p = problem_from(smap, links, speed, FakePolicy(topo))
    assert p.class_names == ("public", "eu-personal")
    assert p.allowed.tolist() == [[True] * 4, [True, True, False, False]]
    assert p.rank_region.tolist() == [0, 0, 1, 1] and p.region_names == ("eu-north", "us-east")
    assert p.egress_per_gb[0, 1] == 0.05 and p.egress_per_gb[1, 0] == 0.09
    assert p.provenance == "measured"
    mp = plan(smap, links, speed, FakePolicy(topo))
    assert mp.gate_passed and mp.moves
    eu = np.flatnonzero(np.array(classes) == "eu-personal")
    assert set(mp.owners_after[eu].tolist()) <= {0, 1}
    # us-east ranks are the fast ones: public shards go there
    assert np.bincount(mp.owners_after, minlength=4)[2:].sum() > 0
    links_s, speed_s = fake_models(4, "synthetic")
    assert problem_from(smap, links_s, speed_s, FakePolicy(topo)).provenance == "synthetic"


def test_simulate_command_prints_a_table_and_writes_rows(tmp_path, capsys):
    out = tmp_path / "rows.json"
    rc = main(["simulate", "--ranks", "8", "--regions", "2", "--shards", "200", "--scenario", "all",
               "--steps", "20", "--horizon", "10", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "two-region-slow-link" in text and "greedy" in text
    rows = json.loads(out.read_text())
    assert len(rows) == 4 * 5  # 4 scenarios × 5 planners
    for r in rows:
        for k in ("scenario", "planner", "makespan_s", "lower_bound_s", "migration_bytes", "migration_s",
                  "horizon_total_s", "plan_seconds"):
            assert k in r
        assert r["provenance"] == "synthetic"


def test_simulate_command_rejects_bad_arguments(capsys):
    assert main(["simulate", "--ranks", "2", "--regions", "3"]) == 2
    assert "--regions 3: must be between 1 and 2" in capsys.readouterr().err
    assert main(["simulate", "--planners", "topo,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err


def write_profile(path, size=4, speeds=None):
    alpha = np.full((size, size), 2e-6)
    beta = np.full((size, size), 8e9)
    alpha[:2, 2:] = alpha[2:, :2] = 5e-3
    beta[:2, 2:] = beta[2:, :2] = 1.25e8
    a = alpha.tolist()
    b = beta.tolist()
    for i in range(size):
        a[i][i] = b[i][i] = None
    doc = {"ranks": [{"rank": r, "host": "localhost", "region": "eu-north" if r < 2 else "us-east"}
                     for r in range(size)],
           "regions": ["eu-north", "us-east"], "alpha_s": a, "beta_bytes_per_s": b,
           "speed_units_per_s": speeds or [4e8, 1e8, 2e8, 2e8]}
    path.write_text(json.dumps(doc))
    return doc


def test_plan_command_dry_run_on_a_measured_profile(tmp_path, capsys):
    prof = tmp_path / "probe.json"
    write_profile(prof)
    out = tmp_path / "plan.json"
    rc = main(["plan", "--profile", str(prof), "--shards", "400", "--planner", "all", "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "measured" in text and "topo" in text
    doc = json.loads(out.read_text())
    plans = {d["planner"]: d for d in doc["plans"]}
    assert set(plans) == {"static", "even", "greedy", "metis", "topo"}
    assert plans["topo"]["provenance"] == "measured"
    assert plans["topo"]["makespan_after_s"] < plans["static"]["makespan_after_s"]
    assert plans["topo"]["lower_bound_s"] <= plans["topo"]["makespan_after_s"]
    # eu-personal shards never leave the EU ranks
    rc = main(["plan", "--profile", str(prof), "--shards", "100", "--data-class", "eu-personal",
               "--json", str(out)])
    assert rc == 0
    topo = json.loads(out.read_text())["plans"][0]
    assert all(dst in (0, 1) for _, _, dst in topo["moves"])


@pytest.mark.parametrize("mutate, key", [
    (lambda d: d.pop("alpha_s"), "alpha_s: missing"),
    (lambda d: d["beta_bytes_per_s"][0].__setitem__(1, -1.0), "beta_bytes_per_s[0][1]"),
    (lambda d: d.__setitem__("speed_units_per_s", [1.0, 2.0]), "speed_units_per_s"),
    (lambda d: d["ranks"][2].__setitem__("rank", 7), "ranks[2]"),
    (lambda d: d["ranks"][3].__setitem__("region", "eu-north"), "ranks[3].region"),
])
def test_plan_command_names_the_file_and_key_of_a_bad_profile(tmp_path, capsys, mutate, key):
    prof = tmp_path / "bad.json"
    doc = write_profile(prof)
    mutate(doc)
    prof.write_text(json.dumps(doc))
    out = tmp_path / "never.json"
    assert main(["plan", "--profile", str(prof), "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and key in err and "Fix:" in err
    assert not out.exists()


def test_plan_command_unreadable_profile(tmp_path, capsys):
    assert main(["plan", "--profile", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err
    (tmp_path / "junk.json").write_text("{not json")
    assert main(["plan", "--profile", str(tmp_path / "junk.json")]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def write_sampled_profile(path, pairs):
    doc = {"ranks": [{"rank": r, "host": "localhost", "region": "eu-north" if r < 2 else "us-east"}
                     for r in range(4)],
           "regions": ["eu-north", "us-east"], "size": 4, "rank_region": [0, 0, 1, 1], "rank_node": [0, 0, 1, 1],
           "pairs": pairs, "speed_units_per_s": [4e8, 1e8, 2e8, 2e8]}
    path.write_text(json.dumps(doc))


def test_plan_command_on_a_sampled_profile_infers_the_unmeasured_pairs(tmp_path, capsys):
    # measured: one pair per node and one region pair each way, as `hpccloud probe` samples at 4 ranks
    prof = tmp_path / "sampled.json"
    write_sampled_profile(prof, [[0, 1, 2e-6, 8e9], [1, 0, 2e-6, 8e9], [2, 3, 2e-6, 8e9], [3, 2, 2e-6, 8e9],
                                 [0, 2, 5e-3, 1.25e8], [2, 0, 5e-3, 1.25e8]])
    out = tmp_path / "plan.json"
    assert main(["plan", "--profile", str(prof), "--shards", "400", "--planner", "all", "--json", str(out)]) == 0
    plans = {d["planner"]: d for d in json.loads(out.read_text())["plans"]}
    assert plans["topo"]["makespan_after_s"] < plans["static"]["makespan_after_s"]
    # without any pair between the regions there is nothing to infer 1 -> 3 from: one clear error
    write_sampled_profile(prof, [[0, 1, 2e-6, 8e9], [2, 3, 2e-6, 8e9]])
    assert main(["plan", "--profile", str(prof)]) == 2
    err = capsys.readouterr().err
    assert "sampled.json" in err and "region pair" in err and "Fix:" in err
