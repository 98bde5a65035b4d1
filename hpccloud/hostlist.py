"""Slurm host lists, parsed to the full grammar and matched without expanding them.

A Slurm host list is a comma-separated list of names; each name is literal text
and bracket groups of numbers, any number of groups per name::

    eu-node[001-128]            128 names, zero-padded to three digits
    rack[1-2]-node[01-02]       rack1-node01, rack1-node02, rack2-node01, rack2-node02
    gpu[8-10]x,login1           gpu8x, gpu9x, gpu10x, login1

Inside brackets: ``N`` or ``LO-HI`` items separated by commas. A range is
padded to the width of its low bound when that has a leading zero (Slurm's
rule: ``[01-10]`` gives ``01 .. 10``, ``[8-10]`` gives ``8, 9, 10``).

Why not expand: a pattern like ``n[0-99999999]`` names 10⁸ hosts, and every
rank would build that list to look for its own name. :func:`parse_hostlist`
counts the names without building them and refuses lists of more than
:data:`MAX_HOSTS`; :func:`hostlist_matches` decides membership by walking the
parsed pattern along the host name (cost: the name's length times the
groups). ``python-hostlist`` parses the same grammar but only by expanding,
which is the behaviour this module exists to avoid.

>>> hostlist_matches("rack[1-2]-node[01-02]", "rack2-node01")
True
>>> hostlist_matches("rack[1-2]-node[01-02]", "rack2-node1")
False
>>> expand_hostlist("n[01-03,07],gpu7")
['n01', 'n02', 'n03', 'n07', 'gpu7']
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass

#: no site has a million nodes; a longer list is a typo (``n[0-99999999]``)
MAX_HOSTS = 1_000_000
#: digits in one bound: 18 keeps every bound an exact machine integer
MAX_DIGITS = 18
#: bracket groups in one name (real names have one to three) and characters in a list
MAX_GROUPS = 16
MAX_CHARS = 10_000


class HostlistError(ValueError):
    """A host list that does not follow the Slurm grammar, or names too many hosts."""


@dataclass(frozen=True)
class NumberSet:
    """One bracket group: ranges ``(lo, hi, width)``; width 0 means no zero padding."""

    ranges: tuple[tuple[int, int, int], ...]

    @property
    def count(self) -> int:
        return sum(hi - lo + 1 for lo, hi, _ in self.ranges)

    def has(self, token: str) -> bool:
        """Is the digit string ``token`` one of this group's numbers, written as Slurm writes it?"""
        value = int(token)
        for lo, hi, width in self.ranges:
            if lo <= value <= hi and token == _fmt(value, width):
                return True
        return False

    def max_len(self) -> int:
        return max(max(len(str(hi)), width) for _lo, hi, width in self.ranges)

    def values(self):
        for lo, hi, width in self.ranges:
            for v in range(lo, hi + 1):
                yield _fmt(v, width)


def _fmt(value: int, width: int) -> str:
    return f"{value:0{width}d}" if width else str(value)


#: one name: literal strings and number groups, in order
Name = tuple["str | NumberSet", ...]


def _split_top(expr: str) -> list[str]:
    """Split on commas outside brackets, checking that brackets pair up and never nest."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(expr):
        if ch == "[":
            if depth:
                raise HostlistError(f"{expr!r}: brackets nest at position {i}")
            depth = 1
        elif ch == "]":
            if not depth:
                raise HostlistError(f"{expr!r}: ']' without '[' at position {i}")
            depth = 0
        elif ch == "," and not depth:
            parts.append(expr[start:i])
            start = i + 1
    if depth:
        raise HostlistError(f"{expr!r}: '[' is never closed")
    parts.append(expr[start:])
    return parts


_RANGE = re.compile(r"(\d+)(?:-(\d+))?")


def _number_set(expr: str, body: str) -> NumberSet:
    ranges = []
    for item in body.split(","):
        item = item.strip()
        m = _RANGE.fullmatch(item)
        if not m:
            raise HostlistError(f"{expr!r}: {item!r} inside brackets is not N or LO-HI "
                                "(digits only, e.g. [01-16,20])")
        lo_s, hi_s = m.group(1), m.group(2) or m.group(1)
        if max(len(lo_s), len(hi_s)) > MAX_DIGITS:
            raise HostlistError(f"{expr!r}: {item!r} has more than {MAX_DIGITS} digits")
        lo, hi = int(lo_s), int(hi_s)
        if lo > hi:
            raise HostlistError(f"{expr!r}: range {item!r} runs backwards; write LO-HI")
        width = len(lo_s) if len(lo_s) > 1 and lo_s.startswith("0") else 0
        ranges.append((lo, hi, width))
    return NumberSet(tuple(ranges))


@functools.lru_cache(maxsize=256)
def parse_hostlist(expr: str) -> tuple[Name, ...]:
    """Parse a host list into names (tuples of literal strings and :class:`NumberSet`).

    Raises :class:`HostlistError` for bad syntax or more than :data:`MAX_HOSTS` names.
    """
    if len(expr) > MAX_CHARS:
        raise HostlistError(f"host list of {len(expr)} characters (at most {MAX_CHARS:,})")
    names: list[Name] = []
    total = 0
    for part in _split_top(expr):
        part = part.strip()
        if not part:
            continue
        pieces: list[str | NumberSet] = []
        pos = 0
        for m in re.finditer(r"\[([^\]]*)\]", part):
            if m.start() > pos:
                pieces.append(part[pos:m.start()])
            pieces.append(_number_set(expr, m.group(1)))
            pos = m.end()
        if pos < len(part):
            pieces.append(part[pos:])
        if sum(isinstance(p, NumberSet) for p in pieces) > MAX_GROUPS:
            raise HostlistError(f"{part[:60]!r}: more than {MAX_GROUPS} bracket groups in one name")
        count = 1
        for p in pieces:
            if isinstance(p, NumberSet):
                count *= p.count
        total += count
        if total > MAX_HOSTS:
            raise HostlistError(f"{expr!r} names more than {MAX_HOSTS:,} hosts; check the "
                                "ranges (a digit too many?)")
        names.append(tuple(pieces))
    return tuple(names)


def _match_name(pieces: Name, i: int, host: str, pos: int) -> bool:
    if i == len(pieces):
        return pos == len(host)
    piece = pieces[i]
    if isinstance(piece, str):
        return host.startswith(piece, pos) and _match_name(pieces, i + 1, host, pos + len(piece))
    # a number group: try every digit run that starts here (adjacent groups are ambiguous)
    end = pos
    limit = min(len(host), pos + piece.max_len())
    while end < limit and host[end] in "0123456789":
        end += 1
        if piece.has(host[pos:end]) and _match_name(pieces, i + 1, host, end):
            return True
    return False


def hostlist_matches(expr: str, host: str) -> bool:
    """Is ``host`` one of the names of the Slurm host list ``expr``? (No expansion.)"""
    return any(_match_name(name, 0, host, 0) for name in parse_hostlist(expr))


def hostlist_count(expr: str) -> int:
    """How many names ``expr`` holds (duplicates counted), without expanding it."""
    total = 0
    for name in parse_hostlist(expr):
        count = 1
        for p in name:
            if isinstance(p, NumberSet):
                count *= p.count
        total += count
    return total


def expand_hostlist(expr: str) -> list[str]:
    """Every name of ``expr`` in order (bounded by :data:`MAX_HOSTS`)."""
    out: list[str] = []
    for name in parse_hostlist(expr):
        choices = [p.values() if isinstance(p, NumberSet) else (p,) for p in name]
        out.extend("".join(t) for t in itertools.product(*choices))
    return out


def is_hostlist(pattern: str) -> bool:
    """A pattern with a bracket opening on a digit is a Slurm host list; else a shell glob."""
    return re.search(r"\[\s*\d", pattern) is not None


__all__ = ["MAX_HOSTS", "HostlistError", "expand_hostlist", "hostlist_count", "hostlist_matches",
           "is_hostlist", "parse_hostlist"]
