"""The timeline as an OTF2 archive (Vampir, Score-P tools), when the ``otf2`` package is installed.

``hpccloud run --trace DIR.otf2`` writes the same events as the Chrome JSON
(:mod:`hpccloud.trace`) into an OTF2 archive folder ``DIR.otf2/`` (anchor file
``traces.otf2``, definitions and one event file per location): one location
group per rank (``rank 2 (eu-north)``, under a system-tree node per region), one
location per lane, every event an ``Enter``/``Leave`` pair of a region named
after it, time in nanoseconds on rank 0's clock.

OTF2 needs the events of a location properly nested: an event that starts
inside another on the same lane but ends after it is clipped to its end.
The ``otf2`` wheel is the Score-P project's own Python binding; it is optional
(``pip install otf2``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import defaultdict
from typing import Any

from hpccloud.errors import InvalidArgument


def _nested(events: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    """``("enter"|"leave", name, ns)`` in time order, properly nested: an event that starts
    inside another on the same lane is its child, clipped to end with it."""
    items = sorted((int(round(e["ts"] * 1000)), -int(round(e["dur"] * 1000)), e["name"])
                   for e in events)
    out: list[tuple[str, str, int]] = []
    stack: list[tuple[int, str]] = []
    for start, neg_dur, name in items:
        while stack and stack[-1][0] <= start:
            t, n = stack.pop()
            out.append(("leave", n, t))
        end = start - neg_dur
        if stack:
            end = min(end, stack[-1][0])
        out.append(("enter", name, start))
        stack.append((end, name))
    while stack:
        t, n = stack.pop()
        out.append(("leave", n, t))
    return out


def check_otf2_target(path: str) -> None:
    """Refuse an ``--trace DIR.otf2`` that is a file, or a folder that is not an OTF2 archive
    (it would be replaced), before the run; check its parent folder can be written."""
    from hpccloud.preflight import probe_folder

    if os.path.lexists(path) and not os.path.isdir(path):
        raise InvalidArgument(f"--trace {path}: is a file, and an OTF2 trace is a folder (the "
                              "archive). Fix: give a new name ending in .otf2, or move the file "
                              "away")
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "traces.otf2")):
        raise InvalidArgument(f"--trace {path}: a folder that is not an OTF2 archive; writing "
                              "the trace would replace it. Fix: give a new name ending in .otf2")
    probe_folder("--trace", os.path.dirname(os.path.abspath(path)))


def write_otf2(path: str | os.PathLike, events: list[dict[str, Any]]) -> None:
    """Write Chrome-form ``events`` (with their metadata events) as the OTF2 archive ``path``.

    The archive is built in a temporary folder beside ``path`` and renamed into
    place, so a reader never sees half an archive.
    """
    try:
        import otf2
    except ImportError:
        raise InvalidArgument(f"--trace {path}: an OTF2 trace needs the otf2 package. Fix: "
                              "pip install otf2, or write Chrome JSON (--trace FILE.json)") from None
    path = os.path.abspath(os.fspath(path))
    check_otf2_target(path)  # never replace a file or a folder of something else
    labels = {e["pid"]: e["args"]["name"] for e in events
              if e.get("ph") == "M" and e["name"] == "process_name"}
    lanes = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
             if e.get("ph") == "M" and e["name"] == "thread_name"}
    by_location: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e.get("ph") == "X":
            by_location[(e["pid"], e["tid"])].append(e)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", dir=parent)
    try:
        with otf2.writer.open(tmp, archive_name="traces", timer_resolution=1_000_000_000) as trace:
            defs = trace.definitions
            root = defs.system_tree_node("hpccloud job")
            nodes: dict[str, Any] = {}
            regions: dict[str, Any] = {}
            for pid in sorted({p for p, _ in by_location} | set(labels)):
                label = labels.get(pid, f"rank {pid}")
                where = label.partition("(")[2].rstrip(")") or "job"
                if where not in nodes:
                    nodes[where] = defs.system_tree_node(where, parent=root)
                group = defs.location_group(label, system_tree_parent=nodes[where])
                for (p, tid), evs in sorted(by_location.items()):
                    if p != pid:
                        continue
                    writer = trace.event_writer(lanes.get((p, tid), f"lane {tid}"), group=group)
                    for kind, name, t in _nested(evs):
                        if name not in regions:
                            regions[name] = defs.region(name)
                        (writer.enter if kind == "enter" else writer.leave)(t, regions[name])
        if os.path.isdir(path):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old.", dir=parent)
            os.replace(path, os.path.join(old, "x"))
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = ["write_otf2"]
