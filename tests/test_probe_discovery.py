"""`hpccloud probe`'s discovered-regions report, on synthetic measured links (no MPI)."""

from __future__ import annotations

import numpy as np

from hpccloud.commands.probe import _discover, _print_discovered
from hpccloud.measure.links import LinkModel
from hpccloud.topology import read_topology_text, topology_from_text


def _model(rank_region, seed=0):
    rng = np.random.default_rng(seed)
    p = len(rank_region)
    same = np.equal.outer(rank_region, rank_region)
    alpha = np.where(same, 20e-6, 5e-3) * rng.lognormal(0, 0.3, (p, p))
    beta = np.where(same, 5e9, 12e6) * rng.lognormal(0, 0.3, (p, p))
    return LinkModel.synthetic(alpha, beta)


def _default_topology(size):
    text, source = read_topology_text(None)
    return topology_from_text(text, source, size)


def test_agreeing_regions_print_the_declared_names_and_no_warning(capsys):
    topo = _default_topology(4)  # eu-north 0-1, us-east 2-3
    found, versus = _discover(_model((0, 0, 1, 1)), topo)
    assert versus.agree and found.rank_region == (0, 0, 1, 1)
    _print_discovered(topo, found, versus)
    out, err = capsys.readouterr()
    assert "rank    3  us-east      us-east" in out
    assert err == ""


def test_disagreeing_regions_warn_on_stderr(capsys):
    topo = _default_topology(4)
    found, versus = _discover(_model((0, 1, 0, 1)), topo)  # the network says 0+2, 1+3
    assert not versus.agree
    _print_discovered(topo, found, versus)
    out, err = capsys.readouterr()
    assert "measured-0" in out
    assert "warning: ranks 0,2 measure as one region but are declared in 'eu-north' (0), " \
           "'us-east' (2)" in err


def test_one_machine_two_ranks_is_inconclusive_not_a_warning(capsys):
    topo = _default_topology(2)
    found, versus = _discover(_model((0, 0)), topo)
    _print_discovered(topo, found, versus)
    out, err = capsys.readouterr()
    assert "too few links" in out and err == ""
