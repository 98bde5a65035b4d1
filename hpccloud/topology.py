"""Regions, the rank → region map, prices and data classes, from a TOML file.

A topology file declares regions and how the job's ranks map onto them::

    name = "two-centres"

    [[regions]]
    name = "eu-north"
    jurisdiction = "EU"
    price_per_core_hour = 0.032          # currency units per core-hour
    egress_per_gb = { default = 0.05, same_jurisdiction = 0.01, "us-east" = 0.09 }
    ranks = [0, 1]                       # explicit ranks, or
    # hosts = ["eu-node[01-16]", "eu-*"] # Slurm host lists / shell globs, or
    # ranks = "even"                     # a contiguous block of the ranks left over

    [data_classes.eu-personal]
    jurisdictions = ["EU"]               # and/or regions = ["eu-north"]; "*" = anywhere
    aggregates_may_leave = true

Ranks are mapped in three passes: explicit ``ranks`` lists, then ``hosts``
patterns (matched against each rank's node name: ``SLURMD_NODENAME`` under
Slurm, else the host name), then the ranks left over are split in contiguous
blocks over the regions that say ``ranks = "even"``.

Everything here is pure: :func:`resolve_topology` takes the parsed document,
the rank count and the per-rank host names as arguments, so a unit test can ask
what a 7-rank job on given hosts would get. :func:`load_topology` is the MPI
entry point: rank 0 reads the file, every rank resolves the same text, so an
invalid file raises the same :class:`~hpccloud.errors.TopologyError` everywhere.
"""

from __future__ import annotations

import fnmatch
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

from hpccloud.errors import TopologyError

DEFAULT_SOURCE = "<embedded default topology>"

_TOP_KEYS = {"name", "regions", "data_classes"}
_REGION_KEYS = {"name", "jurisdiction", "price_per_core_hour", "egress_per_gb", "ranks", "hosts"}
_CLASS_KEYS = {"regions", "jurisdictions", "aggregates_may_leave"}
_EGRESS_SPECIAL = {"default", "same_jurisdiction"}


@dataclass(frozen=True)
class Region:
    """One regional cluster (or part of one)."""

    name: str
    jurisdiction: str
    price_per_core_hour: float
    #: egress price per GB to each *other* region, resolved from the file's rules
    egress_per_gb: dict[str, float]
    ranks: tuple[int, ...]


@dataclass(frozen=True)
class DataClass:
    """Where shards of one data class may live."""

    name: str
    regions: frozenset[str]
    aggregates_may_leave: bool


@dataclass(frozen=True)
class Topology:
    """A resolved topology: every rank of the job belongs to exactly one region."""

    name: str
    source: str
    regions: tuple[Region, ...]
    rank_region: tuple[str, ...]
    hosts: tuple[str, ...]
    data_classes: dict[str, DataClass] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.rank_region)

    @property
    def region_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.regions)

    def region(self, name: str) -> Region:
        for r in self.regions:
            if r.name == name:
                return r
        raise KeyError(name)

    def region_of(self, rank: int) -> str:
        return self.rank_region[rank]

    def ranks_in(self, region: str) -> tuple[int, ...]:
        return self.region(region).ranks

    def egress_price_per_gb(self, src_region: str, dst_region: str) -> float:
        if src_region == dst_region:
            return 0.0
        return self.region(src_region).egress_per_gb[dst_region]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "regions": [
                {
                    "name": r.name,
                    "jurisdiction": r.jurisdiction,
                    "price_per_core_hour": r.price_per_core_hour,
                    "egress_per_gb": r.egress_per_gb,
                    "ranks": list(r.ranks),
                }
                for r in self.regions
            ],
            "ranks": [
                {"rank": i, "host": h, "region": g}
                for i, (h, g) in enumerate(zip(self.hosts, self.rank_region, strict=True))
            ],
            "data_classes": {
                n: {"regions": sorted(c.regions), "aggregates_may_leave": c.aggregates_may_leave}
                for n, c in self.data_classes.items()
            },
        }


# --------------------------------------------------------------------------- parsing


def _fail(source: str, key: str, problem: str, fix: str) -> TopologyError:
    return TopologyError(f"{source}: {key}: {problem}. Fix: {fix}")


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """Parse TOML text, turning syntax errors into a :class:`TopologyError`."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"{source}: not valid TOML ({exc}). Fix: correct the syntax.") from None


def _number(source: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(source, key, f"expected a number, got {type(value).__name__} {value!r}",
                    "write a plain number, e.g. 0.05")
    if value < 0:
        raise _fail(source, key, f"must not be negative (got {value})", "use a value >= 0")
    return float(value)


def _string(source: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(source, key, f"expected a non-empty string, got {value!r}",
                    'write a quoted name, e.g. "eu-north"')
    return value


#: region and data-class names: they become file names (regions) and the runner joins
#: classes with "+" into effective halo classes, so only these characters are allowed
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _name(source: str, key: str, value: Any) -> str:
    value = _string(source, key, value)
    if not _NAME_RE.fullmatch(value) or ".." in value:
        raise _fail(source, key, f"name {value!r} is not allowed: names are 1-64 letters, digits, "
                    "'-', '_' and '.', starting with a letter or digit ('+', '/', '*', spaces and "
                    "control characters are reserved)", 'rename it, e.g. "eu-north"')
    return value


def _string_list(source: str, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(source, key, f"expected a list of strings, got {value!r}",
                    'write e.g. ["eu-north"]')
    return value


def _unknown_keys(source: str, where: str, got: dict, allowed: set[str]) -> None:
    extra = sorted(set(got) - allowed)
    if extra:
        raise _fail(source, f"{where}{extra[0]}", "unknown key",
                    f"remove it or use one of {sorted(allowed)}")




def expand_hostlist(expr: str) -> list[str]:
    """Expand a Slurm host list such as ``"node[01-03,07],login1"``.

    >>> expand_hostlist("n[01-03],gpu7")
    ['n01', 'n02', 'n03', 'gpu7']

    Only one bracket group per name is supported (as in most site node names).
    """
    out: list[str] = []
    # split on commas that are not inside brackets
    parts, depth, cur = [], 0, ""
    for ch in expr:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    for part in (p.strip() for p in parts):
        if not part:
            continue
        m = re.fullmatch(r"([^\[\]]*)\[([^\]]+)\]([^\[\]]*)", part)
        if not m:
            out.append(part)
            continue
        prefix, body, suffix = m.groups()
        for item in body.split(","):
            if "-" in item:
                lo, hi = item.split("-", 1)
                width = len(lo)
                out.extend(f"{prefix}{i:0{width}d}{suffix}" for i in range(int(lo), int(hi) + 1))
            else:
                out.append(f"{prefix}{item}{suffix}")
    return out


def host_matches(pattern: str, host: str) -> bool:
    """A host pattern is a Slurm host list (``n[01-04]``) or a shell glob (``eu-*``)."""
    if "[" in pattern and re.search(r"\[\d", pattern):
        return host in expand_hostlist(pattern)
    return fnmatch.fnmatchcase(host, pattern)


def resolve_topology(doc: dict[str, Any], size: int, hosts: list[str] | None = None,
                     source: str = "<topology>") -> Topology:
    """Validate a parsed topology document and map ``size`` ranks onto its regions.

    Parameters
    ----------
    doc : the parsed TOML document.
    size : the number of ranks in the job.
    hosts : each rank's node name (defaults to ``"localhost"`` for every rank).
    source : the file name, used in every error message.
    """
    if size < 1:
        raise TopologyError(f"{source}: the job has {size} ranks; need at least 1")
    hosts = list(hosts) if hosts is not None else ["localhost"] * size
    if len(hosts) != size:
        raise TopologyError(f"{source}: got {len(hosts)} host names for {size} ranks")
    _unknown_keys(source, "", doc, _TOP_KEYS)
    name = _string(source, "name", doc.get("name", "unnamed"))
    raw_regions = doc.get("regions")
    if not isinstance(raw_regions, list) or not raw_regions:
        raise _fail(source, "regions", "no regions declared",
                    "add at least one [[regions]] table with name, jurisdiction and ranks")

    names: list[str] = []
    juris: dict[str, str] = {}
    prices: dict[str, float] = {}
    egress_raw: dict[str, Any] = {}
    owner: list[str | None] = [None] * size
    even: list[str] = []
    host_rules: list[tuple[str, int, list[str]]] = []

    for i, reg in enumerate(raw_regions):
        where = f"regions[{i}]"
        if not isinstance(reg, dict):
            raise _fail(source, where, "expected a table", "write it as a [[regions]] table")
        _unknown_keys(source, f"{where}.", reg, _REGION_KEYS)
        for req in ("name", "jurisdiction", "price_per_core_hour"):
            if req not in reg:
                raise _fail(source, f"{where}.{req}", "missing", f"add `{req} = ...` to the region")
        rname = _name(source, f"{where}.name", reg["name"])
        if rname in names:
            raise _fail(source, f"{where}.name", f"region {rname!r} is declared twice",
                        "give every region a unique name")
        names.append(rname)
        juris[rname] = _string(source, f"{where}.jurisdiction", reg["jurisdiction"])
        prices[rname] = _number(source, f"{where}.price_per_core_hour", reg["price_per_core_hour"])
        egress_raw[rname] = reg.get("egress_per_gb", 0.0)

        if "ranks" not in reg and "hosts" not in reg:
            raise _fail(source, where, f"region {rname!r} says neither `ranks` nor `hosts`",
                        'add `ranks = [0, 1]`, `ranks = "even"` or `hosts = ["pattern"]`')
        ranks = reg.get("ranks")
        if ranks == "even":
            even.append(rname)
        elif ranks is not None:
            if not isinstance(ranks, list) or not all(
                isinstance(r, int) and not isinstance(r, bool) for r in ranks
            ):
                raise _fail(source, f"{where}.ranks", f"expected a list of integers or \"even\", got {ranks!r}",
                            'write e.g. ranks = [0, 1] or ranks = "even"')
            if not ranks:
                raise _fail(source, f"{where}.ranks", f"region {rname!r} is empty",
                            "list at least one rank, or remove the region")
            for r in ranks:
                if r < 0 or r >= size:
                    raise _fail(source, f"{where}.ranks",
                                f"rank {r} does not exist: the job has {size} ranks (0..{size - 1})",
                                f"launch with at least {max(ranks) + 1} ranks, or edit the list")
                if owner[r] is not None:
                    raise _fail(source, f"{where}.ranks",
                                f"rank {r} is in two regions ({owner[r]!r} and {rname!r})",
                                "list each rank in exactly one region")
                owner[r] = rname
        if "hosts" in reg:
            host_rules.append((rname, i, _string_list(source, f"{where}.hosts", reg["hosts"])))

    # host patterns, for ranks not listed explicitly
    for rank in range(size):
        if owner[rank] is not None:
            continue
        hits = [(rn, i) for rn, i, pats in host_rules if any(host_matches(p, hosts[rank]) for p in pats)]
        if len(hits) > 1:
            raise _fail(source, f"regions[{hits[1][1]}].hosts",
                        f"rank {rank} on host {hosts[rank]!r} matches regions {hits[0][0]!r} and {hits[1][0]!r}",
                        "make the host patterns of different regions disjoint")
        if hits:
            owner[rank] = hits[0][0]
    for rname, i, pats in host_rules:
        if rname not in owner and rname not in even:
            raise _fail(source, f"regions[{i}].hosts",
                        f"region {rname!r} is empty: no rank's host matches {pats} (hosts: {sorted(set(hosts))})",
                        "correct the patterns, or remove the region")

    # the rest, in contiguous blocks over the "even" regions
    rest = [r for r in range(size) if owner[r] is None]
    if rest and not even:
        raise _fail(source, "regions",
                    f"ranks {rest} are not mapped to any region (hosts: {sorted({hosts[r] for r in rest})})",
                    'add them to a region\'s `ranks` or `hosts`, or give a region `ranks = "even"`')
    # as numpy.array_split: the first regions get one rank more when it does not divide
    base, extra = divmod(len(rest), max(1, len(even)))
    lo = 0
    for k, rname in enumerate(even):
        hi = lo + base + (1 if k < extra else 0)
        for r in rest[lo:hi]:
            owner[r] = rname
        lo = hi

    egress = {
        rn: _egress(source, f"regions[{i}].egress_per_gb", egress_raw[rn], rn, names, juris)
        for i, rn in enumerate(names)
    }
    regions = tuple(
        Region(rn, juris[rn], prices[rn], egress[rn], tuple(r for r in range(size) if owner[r] == rn))
        for rn in names
    )
    classes = _data_classes(source, doc.get("data_classes"), names, juris)
    return Topology(name, source, regions, tuple(owner), tuple(hosts), classes)  # type: ignore[arg-type]


def _egress(source: str, key: str, raw: Any, me: str, names: list[str],
            juris: dict[str, str]) -> dict[str, float]:
    if not isinstance(raw, dict):
        price = _number(source, key, raw)
        return {n: price for n in names if n != me}
    for k in raw:
        if k not in _EGRESS_SPECIAL and k not in names:
            raise _fail(source, f"{key}.{k}", "neither a region name nor `default`/`same_jurisdiction`",
                        f"use one of {sorted(_EGRESS_SPECIAL | set(names))}")
    default = _number(source, f"{key}.default", raw.get("default", 0.0))
    same = _number(source, f"{key}.same_jurisdiction", raw.get("same_jurisdiction", default))
    out = {}
    for n in names:
        if n == me:
            continue
        if n in raw:
            out[n] = _number(source, f"{key}.{n}", raw[n])
        else:
            out[n] = same if juris[n] == juris[me] else default
    return out


def _data_classes(source: str, raw: Any, names: list[str], juris: dict[str, str]) -> dict[str, DataClass]:
    if raw is None:
        return {"public": DataClass("public", frozenset(names), True)}
    if not isinstance(raw, dict):
        raise _fail(source, "data_classes", "expected a table of data classes",
                    "write [data_classes.NAME] tables")
    out: dict[str, DataClass] = {}
    for cname, spec in raw.items():
        where = f"data_classes.{cname}"
        _name(source, where, cname)
        if not isinstance(spec, dict):
            raise _fail(source, where, "expected a table", f"write [{where}] with regions/jurisdictions")
        _unknown_keys(source, f"{where}.", spec, _CLASS_KEYS)
        if "regions" not in spec and "jurisdictions" not in spec:
            raise _fail(source, where, "says neither `regions` nor `jurisdictions`",
                        'add e.g. regions = ["*"] or jurisdictions = ["EU"]')
        allowed: set[str] = set()
        for rn in _string_list(source, f"{where}.regions", spec.get("regions", [])):
            if rn == "*":
                allowed.update(names)
            elif rn not in names:
                raise _fail(source, f"{where}.regions", f"unknown region {rn!r}",
                            f"use one of {names} or \"*\"")
            else:
                allowed.add(rn)
        known_j = sorted(set(juris.values()))
        for j in _string_list(source, f"{where}.jurisdictions", spec.get("jurisdictions", [])):
            if j not in known_j:
                raise _fail(source, f"{where}.jurisdictions", f"unknown jurisdiction {j!r}",
                            f"use one of {known_j}")
            allowed.update(n for n in names if juris[n] == j)
        leave = spec.get("aggregates_may_leave", False)
        if not isinstance(leave, bool):
            raise _fail(source, f"{where}.aggregates_may_leave", f"expected true or false, got {leave!r}",
                        "write aggregates_may_leave = true or false")
        out[cname] = DataClass(cname, frozenset(allowed), leave)
    return out


# --------------------------------------------------------------------------- loading


def node_name() -> str:
    """This process's node name: ``SLURMD_NODENAME`` under Slurm, else the host name."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def read_topology_text(path: str | os.PathLike | None) -> tuple[str, str]:
    """Return ``(text, source)`` for a topology file, or the embedded default."""
    if path is None:
        text = resources.files("hpccloud.data").joinpath("default_topology.toml").read_text()
        return text, DEFAULT_SOURCE
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as fh:
            return fh.read(), source
    except OSError as exc:
        raise TopologyError(f"{source}: cannot read the topology file ({exc.strerror}). "
                            "Fix: check the path given to --topology.") from None


def topology_from_text(text: str, source: str, size: int, hosts: list[str] | None = None,
                       exclude_regions: tuple[str, ...] = ()) -> Topology:
    doc = parse_toml(text, source)
    if not exclude_regions:
        return resolve_topology(doc, size, hosts, source)
    topo = resolve_topology(without_regions(doc, exclude_regions, source), size, hosts, source)
    # the data classes keep the excluded regions: residency is what the file says, and a
    # class that may live only there is refused naming them, not an empty list
    regions = doc["regions"]
    classes = _data_classes(source, doc.get("data_classes"), [r["name"] for r in regions],
                            {r["name"]: r["jurisdiction"] for r in regions})
    return replace(topo, data_classes=classes)


def without_regions(doc: dict[str, Any], names, source: str = "<topology>") -> dict[str, Any]:
    """The parsed document without the regions ``names`` (pure; ``--exclude-region``).

    Data classes lose those regions, and jurisdictions no remaining region is
    in (:func:`topology_from_text` gives the resolved topology the file's own
    classes back, so residency never widens and a class left with nowhere to
    live is refused naming its regions).

    >>> d = without_regions(parse_toml(read_topology_text(None)[0], "d"), ["us-east"])
    >>> [r["name"] for r in d["regions"]], d["data_classes"]["public"]["regions"]
    (['eu-north'], ['*'])
    """
    regions = doc.get("regions")
    known = [r.get("name") for r in regions] if isinstance(regions, list) else []
    for n in names:
        if n not in known:
            raise _fail(source, "--exclude-region", f"unknown region {n!r}", f"use one of {known}")
    kept = [r for r in regions if r.get("name") not in set(names)]
    if not kept:
        raise _fail(source, "--exclude-region", f"excluding {sorted(names)} leaves no region",
                    "keep at least one region")
    juris = {r.get("jurisdiction") for r in kept}
    classes = {}
    for cname, spec in (doc.get("data_classes") or {}).items():
        if isinstance(spec, dict):
            spec = dict(spec)
            if isinstance(spec.get("regions"), list):
                spec["regions"] = [x for x in spec["regions"] if x not in set(names)]
            if isinstance(spec.get("jurisdictions"), list):
                spec["jurisdictions"] = [j for j in spec["jurisdictions"] if j in juris]
        classes[cname] = spec
    out = {**doc, "regions": kept}
    if "data_classes" in doc:
        out["data_classes"] = classes
    return out


def load_topology(path: str | os.PathLike | None = None, comm=None,
                  exclude_regions: tuple[str, ...] = ()) -> Topology:
    """Load and resolve a topology collectively on ``comm`` (default: a 1-rank view).

    Rank 0 reads the file and broadcasts it, every rank contributes its node
    name, and every rank resolves the same inputs, so a bad file raises the
    same :class:`TopologyError` on every rank.
    """
    if comm is None:
        text, source = read_topology_text(path)
        return topology_from_text(text, source, 1, [node_name()], tuple(exclude_regions))
    from hpccloud.comm.agree import agree, bcast_result  # MPI lives in comm/

    text, source = bcast_result(comm, lambda: read_topology_text(path))
    hosts = comm.allgather(node_name())
    return agree(comm, lambda: topology_from_text(text, source, comm.Get_size(), hosts,
                                                  tuple(exclude_regions)))
