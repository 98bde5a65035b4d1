"""Topology files: rank mapping by lists, host patterns and Slurm names; every bad case."""

import pytest

from hpccloud.errors import TopologyError
from hpccloud.hostlist import expand_hostlist
from hpccloud.topology import (
    host_matches,
    read_topology_text,
    topology_from_text,
)

REGION = """
[[regions]]
name = "{name}"
jurisdiction = "{j}"
price_per_core_hour = 0.05
{extra}
"""


def region(name, j="EU", extra=""):
    return REGION.format(name=name, j=j, extra=extra)


def test_default_topology_fits_any_rank_count():
    text, source = read_topology_text(None)
    for size in range(1, 9):
        topo = topology_from_text(text, source, size)
        assert topo.size == size
        assert topo.rank_region[0] == "eu-north"
        if size > 1:
            assert topo.rank_region[-1] == "us-east"
        # contiguous blocks, every rank once
        assert sorted(r for reg in topo.regions for r in reg.ranks) == list(range(size))
    topo = topology_from_text(text, source, 4)
    assert topo.egress_price_per_gb("eu-north", "us-east") == 0.05
    assert topo.egress_price_per_gb("us-east", "eu-north") == 0.09
    assert topo.egress_price_per_gb("us-east", "us-east") == 0.0
    assert topo.data_classes["eu-personal"].regions == frozenset({"eu-north"})
    assert topo.data_classes["public"].regions == frozenset({"eu-north", "us-east"})


def test_explicit_lists():
    text = region("a", extra="ranks = [0, 2]") + region("b", "US", extra="ranks = [1, 3]")
    topo = topology_from_text(text, "t.toml", 4)
    assert topo.rank_region == ("a", "b", "a", "b")
    assert topo.ranks_in("b") == (1, 3)


def test_host_patterns_and_slurm_host_lists():
    text = (region("eu", extra='hosts = ["eu-node[01-02]"]')
            + region("us", "US", extra='hosts = ["us-*"]'))
    hosts = ["eu-node01", "eu-node01", "eu-node02", "us-gpu7"]
    topo = topology_from_text(text, "t.toml", 4, hosts)
    assert topo.rank_region == ("eu", "eu", "eu", "us")
    assert topo.hosts == tuple(hosts)


def test_explicit_then_hosts_then_even():
    text = (region("pinned", extra="ranks = [3]")
            + region("eu", extra='hosts = ["eu*"]')
            + region("rest1", "US", extra='ranks = "even"')
            + region("rest2", "US", extra='ranks = "even"'))
    hosts = ["eu1", "x", "x", "eu9", "x", "x", "x"]
    topo = topology_from_text(text, "t.toml", 7, hosts)
    assert topo.rank_region == ("eu", "rest1", "rest1", "pinned", "rest1", "rest2", "rest2")


def test_expand_hostlist():
    assert expand_hostlist("n[01-03,07],login") == ["n01", "n02", "n03", "n07", "login"]
    assert expand_hostlist("gpu[8-10]x") == ["gpu8x", "gpu9x", "gpu10x"]
    assert host_matches("n[01-04]", "n03") and not host_matches("n[01-04]", "n05")
    assert host_matches("eu-*", "eu-7") and not host_matches("eu-*", "us-7")


BAD = [
    ("unknown top key", 'colour = "red"\n' + region("a", extra="ranks = [0]"),
     1, None, "t.toml: colour: unknown key"),
    ("unknown region key", region("a", extra="ranks = [0]\nzone = 3"), 1, None,
     "t.toml: regions[0].zone: unknown key"),
    ("empty region", region("a", extra="ranks = []"), 1, None,
     "t.toml: regions[0].ranks: region 'a' is empty"),
    ("rank in two regions", region("a", extra="ranks = [0, 1]") + region("b", extra="ranks = [1]"),
     2, None, "rank 1 is in two regions ('a' and 'b')"),
    ("unmapped ranks", region("a", extra="ranks = [0]"), 3, None,
     "ranks [1, 2] are not mapped to any region"),
    ("rank count does not fit", region("a", extra="ranks = [0, 1, 5]"), 4, None,
     "rank 5 does not exist: the job has 4 ranks"),
    ("wrong type price", region("a", extra="ranks = [0]").replace("0.05", '"cheap"'), 1, None,
     "regions[0].price_per_core_hour: expected a number, got str 'cheap'"),
    ("bool price", region("a", extra="ranks = [0]").replace("0.05", "true"), 1, None,
     "expected a number, got bool"),
    ("wrong type ranks", region("a", extra='ranks = "all"'), 1, None,
     'regions[0].ranks: expected a list of integers or "even"'),
    ("missing jurisdiction", '[[regions]]\nname = "a"\nprice_per_core_hour = 1\nranks = [0]\n', 1,
     None, "regions[0].jurisdiction: missing"),
    ("no mapping at all", region("a"), 1, None, "says neither `ranks` nor `hosts`"),
    ("duplicate region", region("a", extra="ranks = [0]") + region("a", extra="ranks = [1]"), 2,
     None, "region 'a' is declared twice"),
    ("host pattern matches nothing", region("a", extra='hosts = ["zz*"]'), 1, ["node1"],
     "region 'a' is empty: no rank's host matches ['zz*']"),
    ("hosts in two regions", region("a", extra='hosts = ["n*"]') + region("b", extra='hosts = ["n1"]'),
     1, ["n1"], "matches regions 'a' and 'b'"),
    ("negative price", region("a", extra="ranks = [0]").replace("0.05", "-1"), 1, None,
     "must not be negative"),
    ("bad egress key", region("a", extra="ranks = [0]\negress_per_gb = { mars = 1 }"), 1, None,
     "regions[0].egress_per_gb.mars: neither a region name"),
    ("no regions", 'name = "x"\n', 1, None, "t.toml: regions: no regions declared"),
    ("not toml", "[[regions]\n", 1, None, "t.toml: not valid TOML"),
    ("unknown data class region", region("a", extra="ranks = [0]")
     + '[data_classes.x]\nregions = ["b"]\n', 1, None, "data_classes.x.regions: unknown region 'b'"),
    ("unknown jurisdiction", region("a", extra="ranks = [0]")
     + '[data_classes.x]\njurisdictions = ["MARS"]\n', 1, None, "unknown jurisdiction 'MARS'"),
    ("unknown data class key", region("a", extra="ranks = [0]")
     + '[data_classes.x]\nregions = ["*"]\nlevel = 3\n', 1, None, "data_classes.x.level: unknown key"),
    ("class without places", region("a", extra="ranks = [0]") + "[data_classes.x]\n"
     "aggregates_may_leave = true\n", 1, None, "data_classes.x: says neither"),
]


@pytest.mark.parametrize("case,text,size,hosts,message", BAD, ids=[b[0] for b in BAD])
def test_bad_topology_names_file_key_and_fix(case, text, size, hosts, message):
    with pytest.raises(TopologyError) as info:
        topology_from_text(text, "t.toml", size, hosts)
    text = str(info.value)
    assert message in text
    assert text.startswith("t.toml: ")
    assert "Fix:" in text


def test_missing_file(tmp_path):
    with pytest.raises(TopologyError, match="cannot read the topology file"):
        read_topology_text(tmp_path / "nope.toml")


def test_shipped_examples_are_valid():
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    text, source = read_topology_text(root / "examples" / "three-regions.toml")
    topo = topology_from_text(text, source, 6)
    assert topo.rank_region == ("de-hpc", "de-hpc", "eu-west-cloud", "eu-west-cloud",
                                "us-east-cloud", "us-east-cloud")
    assert topo.data_classes["de-health"].regions == frozenset({"de-hpc"})
    assert topo.egress_price_per_gb("de-hpc", "eu-west-cloud") == 0.0
