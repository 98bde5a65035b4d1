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
what a 7-rank job on given hosts would get. The MPI entry point is
:func:`hpccloud.comm.topology.load_topology`: rank 0 reads the file, every rank
resolves the same text, so an invalid file raises the same
:class:`~hpccloud.errors.TopologyError` everywhere.

Validation: names of regions and data classes are safe file names (letters,
digits, ``_ . -``; no path separators, control characters, ``*``, ``+`` or
``..``), prices finite and non-negative, host lists parsed and bounded
(:mod:`hpccloud.hostlist`), a class may live somewhere, the file is UTF-8 and at
most 1 MiB. Every error names the file, the key and the fix.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
import reprlib
import socket
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

from hpccloud.errors import TopologyError
from hpccloud.hostlist import HostlistError, hostlist_matches, is_hostlist, parse_hostlist

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

#: region names become file names (``<output>/<region>.h5``), class names become
#: HDF5 attributes and keys; both: a letter or digit, then letters, digits, ``_ . -``
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: names the output folder uses for itself
RESERVED_REGION_NAMES = frozenset({"catalogue", "manifest"})
#: a topology file is a few KiB; more is not a topology (e.g. ``--topology /dev/zero``)
MAX_FILE_BYTES = 1 << 20
_SHOW = reprlib.Repr()
_SHOW.maxstring, _SHOW.maxother, _SHOW.maxlevel, _SHOW.maxlist = 60, 60, 3, 8


def _show(value: Any) -> str:
    """A short repr for messages: bounded in length and nesting (a value may be huge)."""
    return _SHOW.repr(value)


def _fail(source: str, key: str, problem: str, fix: str) -> TopologyError:
    return TopologyError(f"{source}: {key}: {problem}. Fix: {fix}")


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """Parse TOML text, turning syntax errors into a :class:`TopologyError`."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"{source}: not valid TOML ({exc}). Fix: correct the syntax.") from None
    except RecursionError:
        raise TopologyError(f"{source}: arrays or tables nested too deeply to parse. Fix: a "
                            "topology needs at most two levels of nesting") from None


def _number(source: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(source, key, f"expected a number, got {type(value).__name__} {_show(value)}",
                    "write a plain number, e.g. 0.05")
    if not math.isfinite(value):
        raise _fail(source, key, f"must be a finite number (got {value})", "write a number, e.g. 0.05")
    if value < 0:
        raise _fail(source, key, f"must not be negative (got {value})", "use a value >= 0")
    return float(value)


def _string(source: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(source, key, f"expected a non-empty string, got {_show(value)}",
                    'write a quoted name, e.g. "eu-north"')
    if not value.isprintable() or len(value) > 200:
        raise _fail(source, key, f"{_show(value)} holds control characters or is over 200 characters",
                    "write a short plain name")
    return value


def _safe_name(source: str, key: str, value: Any, what: str) -> str:
    name = _string(source, key, value)
    if not _SAFE_NAME.fullmatch(name):
        raise _fail(source, key, f"{what} name {_show(name)} is not allowed ({what} names become "
                    "file names and keys; '+', '/', '*', spaces and control characters are reserved)",
                    "use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit, "
                    'e.g. "eu-north"')
    if ".." in name:
        raise _fail(source, key, f"{what} name {_show(name)} contains '..'", "use a name without '..'")
    return name


def _string_list(source: str, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(source, key, f"expected a list of strings, got {_show(value)}",
                    'write e.g. ["eu-north"]')
    return value


def _unknown_keys(source: str, where: str, got: dict, allowed: set[str]) -> None:
    extra = sorted(set(got) - allowed)
    if extra:
        raise _fail(source, f"{where}{_show(extra[0])[1:-1]}", "unknown key",
                    f"remove it or use one of {sorted(allowed)}")


def host_matches(pattern: str, host: str) -> bool:
    """A host pattern is a Slurm host list (``n[01-04]``, see :mod:`hpccloud.hostlist`) or a
    shell glob (``eu-*``). Host lists are matched by parsing, never expanded."""
    if is_hostlist(pattern):
        return hostlist_matches(pattern, host)
    return fnmatch.fnmatchcase(host, pattern)


def _host_patterns(source: str, key: str, value: Any) -> list[str]:
    patterns = _string_list(source, key, value)
    if len(patterns) > 10_000:
        raise _fail(source, key, f"{len(patterns)} patterns", "use host lists like n[001-128]")
    for pat in patterns:
        if len(pat) > 10_000:
            raise _fail(source, key, f"a pattern of {len(pat)} characters",
                        "write a host list like eu-node[001-128] or a glob like eu-*")
        if not pat.isprintable():
            raise _fail(source, key, f"pattern {_show(pat)} holds control characters",
                        "write a host list like eu-node[001-128] or a glob like eu-*")
        if is_hostlist(pat):
            if any(c in pat for c in "*?"):
                raise _fail(source, key, f"pattern {_show(pat)} mixes a Slurm host list with glob "
                            "characters", "use either eu-node[001-128] or eu-node*")
            try:
                parse_hostlist(pat)
            except HostlistError as exc:
                raise _fail(source, key, f"bad Slurm host list: {exc}",
                            "write e.g. eu-node[001-128] or rack[1-2]-node[01-16]") from None
    return patterns


@dataclass
class _RegionSpec:
    """One ``[[regions]]`` table, checked, before ranks are mapped."""

    index: int
    name: str
    jurisdiction: str
    price: float
    egress_raw: Any
    ranks: list[int] | None
    even: bool
    hosts: list[str] | None


def _region_spec(source: str, i: int, reg: Any, size: int) -> _RegionSpec:
    where = f"regions[{i}]"
    if not isinstance(reg, dict):
        raise _fail(source, where, "expected a table", "write it as a [[regions]] table")
    _unknown_keys(source, f"{where}.", reg, _REGION_KEYS)
    for req in ("name", "jurisdiction", "price_per_core_hour"):
        if req not in reg:
            raise _fail(source, f"{where}.{req}", "missing", f"add `{req} = ...` to the region")
    rname = _safe_name(source, f"{where}.name", reg["name"], "region")
    if rname.lower() in RESERVED_REGION_NAMES:
        raise _fail(source, f"{where}.name", f"{rname!r} is a name the output folder uses itself",
                    f"call the region something other than {sorted(RESERVED_REGION_NAMES)}")
    spec = _RegionSpec(i, rname, _string(source, f"{where}.jurisdiction", reg["jurisdiction"]),
                       _number(source, f"{where}.price_per_core_hour", reg["price_per_core_hour"]),
                       reg.get("egress_per_gb", 0.0), None, False, None)
    if "ranks" not in reg and "hosts" not in reg:
        raise _fail(source, where, f"region {rname!r} says neither `ranks` nor `hosts`",
                    'add `ranks = [0, 1]`, `ranks = "even"` or `hosts = ["pattern"]`')
    ranks = reg.get("ranks")
    if ranks == "even":
        spec.even = True
    elif ranks is not None:
        if not isinstance(ranks, list) or not all(
            isinstance(r, int) and not isinstance(r, bool) for r in ranks
        ):
            raise _fail(source, f"{where}.ranks", f"expected a list of integers or \"even\", got "
                        f"{_show(ranks)}", 'write e.g. ranks = [0, 1] or ranks = "even"')
        if not ranks:
            raise _fail(source, f"{where}.ranks", f"region {rname!r} is empty",
                        "list at least one rank, or remove the region")
        for r in ranks:
            if r < 0 or r >= size:
                raise _fail(source, f"{where}.ranks",
                            f"rank {r} does not exist: the job has {size} ranks (0..{size - 1})",
                            f"launch with at least {max(ranks) + 1} ranks, or edit the list")
        spec.ranks = ranks
    if "hosts" in reg:
        spec.hosts = _host_patterns(source, f"{where}.hosts", reg["hosts"])
    return spec


def _map_ranks(source: str, specs: list[_RegionSpec], size: int, hosts: list[str]) -> list[str]:
    """Rank → region name: explicit lists, then host patterns, then "even" blocks."""
    owner: list[str | None] = [None] * size
    for spec in specs:
        for r in spec.ranks or ():
            if owner[r] is not None:
                raise _fail(source, f"regions[{spec.index}].ranks",
                            f"rank {r} is in two regions ({owner[r]!r} and {spec.name!r})",
                            "list each rank in exactly one region")
            owner[r] = spec.name
    host_rules = [s for s in specs if s.hosts is not None]
    even = [s.name for s in specs if s.even]
    for rank in range(size):
        if owner[rank] is not None:
            continue
        hits = [s for s in host_rules if any(host_matches(p, hosts[rank]) for p in s.hosts or ())]
        if len(hits) > 1:
            raise _fail(source, f"regions[{hits[1].index}].hosts",
                        f"rank {rank} on host {hosts[rank]!r} matches regions {hits[0].name!r} and "
                        f"{hits[1].name!r}", "make the host patterns of different regions disjoint")
        if hits:
            owner[rank] = hits[0].name
    for s in host_rules:
        if s.name not in owner and not s.even:
            raise _fail(source, f"regions[{s.index}].hosts",
                        f"region {s.name!r} is empty: no rank's host matches {_show(s.hosts)} "
                        f"(hosts: {_show(sorted(set(hosts)))})", "correct the patterns, or remove the region")
    rest = [r for r in range(size) if owner[r] is None]
    if rest and not even:
        raise _fail(source, "regions",
                    f"ranks {_show(rest)} are not mapped to any region (hosts: "
                    f"{_show(sorted({hosts[r] for r in rest}))})",
                    'add them to a region\'s `ranks` or `hosts`, or give a region `ranks = "even"`')
    # as numpy.array_split: the first regions get one rank more when it does not divide
    base, extra = divmod(len(rest), max(1, len(even)))
    lo = 0
    for k, rname in enumerate(even):
        hi = lo + base + (1 if k < extra else 0)
        for r in rest[lo:hi]:
            owner[r] = rname
        lo = hi
    return owner  # type: ignore[return-value]


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
    specs: list[_RegionSpec] = []
    for i, reg in enumerate(raw_regions):
        spec = _region_spec(source, i, reg, size)
        if spec.name in (s.name for s in specs):
            raise _fail(source, f"regions[{i}].name", f"region {spec.name!r} is declared twice",
                        "give every region a unique name")
        specs.append(spec)
    owner = _map_ranks(source, specs, size, hosts)
    names = [s.name for s in specs]
    juris = {s.name: s.jurisdiction for s in specs}
    regions = tuple(
        Region(s.name, s.jurisdiction, s.price,
               _egress(source, f"regions[{s.index}].egress_per_gb", s.egress_raw, s.name, names, juris),
               tuple(r for r in range(size) if owner[r] == s.name))
        for s in specs
    )
    classes = _data_classes(source, doc.get("data_classes"), names, juris)
    return Topology(name, source, regions, tuple(owner), tuple(hosts), classes)


def _egress(source: str, key: str, raw: Any, me: str, names: list[str],
            juris: dict[str, str]) -> dict[str, float]:
    if not isinstance(raw, dict):
        price = _number(source, key, raw)
        return {n: price for n in names if n != me}
    for k in raw:
        if k not in _EGRESS_SPECIAL and k not in names:
            raise _fail(source, f"{key}.{_show(k)[1:-1]}", "neither a region name nor "
                        "`default`/`same_jurisdiction`", f"use one of {sorted(_EGRESS_SPECIAL | set(names))}")
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
        where = f"data_classes.{_show(cname)[1:-1]}"
        _safe_name(source, where, cname, "data class")
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
                raise _fail(source, f"{where}.regions", f"unknown region {_show(rn)}",
                            f"use one of {names} or \"*\"")
            else:
                allowed.add(rn)
        known_j = sorted(set(juris.values()))
        for j in _string_list(source, f"{where}.jurisdictions", spec.get("jurisdictions", [])):
            if j not in known_j:
                raise _fail(source, f"{where}.jurisdictions", f"unknown jurisdiction {_show(j)}",
                            f"use one of {known_j}")
            allowed.update(n for n in names if juris[n] == j)
        if not allowed:
            raise _fail(source, where, "may live in no region (empty `regions` and `jurisdictions`)",
                        'list where it may live, e.g. regions = ["eu-north"] or jurisdictions = ["EU"]')
        leave = spec.get("aggregates_may_leave", False)
        if not isinstance(leave, bool):
            raise _fail(source, f"{where}.aggregates_may_leave", f"expected true or false, got "
                        f"{_show(leave)}", "write aggregates_may_leave = true or false")
        out[cname] = DataClass(cname, frozenset(allowed), leave)
    return out


# --------------------------------------------------------------------------- loading


def node_name() -> str:
    """This process's node name: ``SLURMD_NODENAME`` under Slurm, else the host name."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def read_topology_text(path: str | os.PathLike | None) -> tuple[str, str]:
    """Return ``(text, source)`` for a topology file, or the embedded default.

    The file must be UTF-8 text (TOML's rule) of at most :data:`MAX_FILE_BYTES`.
    """
    if path is None:
        text = resources.files("hpccloud.data").joinpath("default_topology.toml").read_text()
        return text, DEFAULT_SOURCE
    source = os.fspath(path)
    from hpccloud.io.small import read_regular

    raw = read_regular(source, MAX_FILE_BYTES, "topology file",
                       "check the path given to --topology.", TopologyError)
    if len(raw) > MAX_FILE_BYTES:
        raise TopologyError(f"{source}: over {MAX_FILE_BYTES // 1024} KiB: not a topology file. "
                            "Fix: check the path given to --topology.")
    try:
        return raw.decode("utf-8"), source
    except UnicodeDecodeError as exc:
        raise TopologyError(f"{source}: not UTF-8 text (byte {exc.start} is "
                            f"{raw[exc.start:exc.start + 1]!r}). Fix: save the file as UTF-8 "
                            "(TOML files must be UTF-8).") from None


def topology_from_text(text: str, source: str, size: int, hosts: list[str] | None = None,
                       exclude_regions: tuple[str, ...] = ()) -> Topology:
    """Parse and resolve topology text, without ``exclude_regions`` (pure: the collective
    loader is :func:`hpccloud.comm.topology.load_topology`)."""
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
    regions: Any = doc.get("regions")
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
            if not spec.get("regions") and not spec.get("jurisdictions"):
                continue  # nowhere left to live: topology_from_text restores the file's class
        classes[cname] = spec
    out = {**doc, "regions": kept}
    if "data_classes" in doc:
        out["data_classes"] = classes
    return out

