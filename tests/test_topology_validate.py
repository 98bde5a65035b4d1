"""Topology validation beyond the basic keys: safe names, finite numbers, host lists,
file encoding and size. Every refusal names the file, the key and the fix."""

import time

import pytest

from hpccloud.errors import TopologyError
from hpccloud.hostlist import (
    MAX_HOSTS,
    HostlistError,
    expand_hostlist,
    hostlist_count,
    hostlist_matches,
    parse_hostlist,
)
from hpccloud.topology import host_matches, read_topology_text, topology_from_text


def region(name='"a"', j='"EU"', price="0.05", extra="ranks = [0]"):
    return (f"[[regions]]\nname = {name}\njurisdiction = {j}\n"
            f"price_per_core_hour = {price}\n{extra}\n")


BAD = [
    ("nan price", region(price="nan"), "regions[0].price_per_core_hour: must be a finite number"),
    ("inf price", region(price="inf"), "must be a finite number"),
    ("-inf egress", region(extra="ranks = [0]\negress_per_gb = -inf"), "egress_per_gb: must be a finite"),
    ("nan egress entry", region(extra="ranks = [0]\negress_per_gb = { default = nan }"),
     "egress_per_gb.default: must be a finite"),
    ("slash in region", region(name='"../../x"'), "regions[0].name: region name '../../x' is not allowed"),
    ("nul in region", region(name='"a\\u0000b"'), "regions[0].name: 'a\\x00b' holds control"),
    ("newline in region", region(name='"a\\nb"'), "regions[0].name: 'a\\nb' holds control"),
    ("star region", region(name='"*"'), "is not allowed"),
    ("dots region", region(name='"a..b"'), "contains '..'"),
    ("reserved region", region(name='"catalogue"'), "a name the output folder uses"),
    ("plus class", region() + '[data_classes."a+b"]\nregions = ["*"]\n', "data class name 'a+b'"),
    ("empty class", region() + '[data_classes.""]\nregions = ["*"]\n', "data_classes.: expected a non-empty"),
    ("class nowhere", region() + "[data_classes.x]\nregions = []\n", "data_classes.x: may live in no region"),
    ("control jurisdiction", region(j='"E\\tU"'), "jurisdiction: 'E\\tU' holds control characters"),
    ("huge host range", region(extra='hosts = ["n[0-99999999]"]'), "names more than 1,000,000 hosts"),
    ("bad host range", region(extra='hosts = ["n[1-x]"]'), "'1-x' inside brackets is not N or LO-HI"),
    ("backwards range", region(extra='hosts = ["n[9-1]"]'), "runs backwards"),
    ("unclosed bracket", region(extra='hosts = ["n[1-2"]'), "is never closed"),
    ("glob and list", region(extra='hosts = ["n[1-2]*"]'), "mixes a Slurm host list with glob"),
    ("deep nesting", "name = " + "[" * 5000 + "]" * 5000 + "\n" + region(), "nested too deeply"),
    ("deep value", region(extra="ranks = " + "[" * 50 + "]" * 50), "expected a list of integers"),
]


@pytest.mark.parametrize("case,text,message", BAD, ids=[b[0] for b in BAD])
def test_refused_with_file_key_and_fix(case, text, message):
    with pytest.raises(TopologyError) as info:
        topology_from_text(text, "t.toml", 1, ["n1"])
    got = str(info.value)
    assert message in got
    assert got.startswith("t.toml: ") and "Fix:" in got
    assert len(got) < 600  # bounded: huge values are shown shortened


def test_huge_host_range_refused_fast():
    t0 = time.perf_counter()
    with pytest.raises(TopologyError):
        topology_from_text(region(extra='hosts = ["n[0-99999999]"]'), "t.toml", 4, ["n5"] * 4)
    assert time.perf_counter() - t0 < 1.0


def test_non_utf8_and_oversized_files(tmp_path):
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(region(name='"caf\xe9"').encode("latin-1"))
    with pytest.raises(TopologyError, match=r"latin1.toml: not UTF-8 text \(byte \d+.*Fix: save"):
        read_topology_text(bad)
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (2 << 20))
    with pytest.raises(TopologyError, match="big.toml: over 1024 KiB"):
        read_topology_text(big)
    with pytest.raises(TopologyError, match="a folder, not a regular file: not a topology file"):
        read_topology_text(tmp_path)
    with pytest.raises(TopologyError, match="cannot read the topology file"):
        read_topology_text(tmp_path / "missing.toml")


def test_multi_group_host_lists():
    assert expand_hostlist("rack[1-2]-node[01-02]") == [
        "rack1-node01", "rack1-node02", "rack2-node01", "rack2-node02"]
    assert hostlist_matches("rack[1-2]-node[01-02]", "rack2-node02")
    assert not hostlist_matches("rack[1-2]-node[01-02]", "rack3-node01")
    assert not hostlist_matches("rack[1-2]-node[01-02]", "rack1-node1")  # padding counts
    assert hostlist_matches("n[8-10]x,login1", "n10x") and hostlist_matches("n[8-10]x,login1", "login1")
    assert not hostlist_matches("n[8-10]x", "n08x")
    # adjacent groups: the split is ambiguous, every split is tried
    assert hostlist_matches("n[1-12][1-3]", "n123") and hostlist_matches("n[1-12][1-3]", "n121")
    assert not hostlist_matches("n[1-12][1-3]", "n134")
    assert hostlist_count("n[0-99999],m1") == 100_001
    topo_text = (region(name='"r1"', extra='hosts = ["rack1-node[01-02]"]')
                 + region(name='"r2"', j='"US"', extra='hosts = ["rack[2-3]-node[01-02]"]'))
    topo = topology_from_text(topo_text, "t.toml", 3, ["rack1-node02", "rack3-node01", "rack2-node02"])
    assert topo.rank_region == ("r1", "r2", "r2")


def test_matching_agrees_with_expansion():
    import random

    rng = random.Random(5)
    for _ in range(200):
        lo = rng.randint(0, 120)
        hi = lo + rng.randint(0, 30)
        pad = rng.choice(["", "0", "00"])
        lo_s = pad + str(lo) if pad else str(lo)
        pat = f"a[{lo_s}-{hi}]b[{rng.randint(0, 3)}-{rng.randint(4, 11)}]"
        names = set(expand_hostlist(pat))
        for host in list(names)[:5] + [f"a{rng.randint(0, 200)}b{rng.randint(0, 15)}" for _ in range(5)]:
            assert hostlist_matches(pat, host) == (host in names), (pat, host)


def test_hostlist_limits():
    with pytest.raises(HostlistError, match="more than"):
        parse_hostlist(f"n[1-{MAX_HOSTS}],m[1-2]")
    with pytest.raises(HostlistError, match="nest"):
        parse_hostlist("n[[1-2]]")
    assert host_matches("eu-[ab]*", "eu-a7")  # a glob's character class is not a host list


def test_pathological_patterns_refused_fast():
    t0 = time.perf_counter()
    for pat in ("n" + "[1-2]" * 5000, "n[" + ",".join(["1"] * 3000) + "]" * 1, "*" * 5000 + "x"):
        text = region(extra=f'hosts = ["{pat}"]')
        try:
            topology_from_text(text, "t.toml", 2, ["n1", "n" + "1" * 40])
        except TopologyError as exc:
            assert "Fix:" in str(exc)
    with pytest.raises(HostlistError, match="more than 16 bracket groups"):
        parse_hostlist("n" + "[1-2]" * 17)
    assert time.perf_counter() - t0 < 5
