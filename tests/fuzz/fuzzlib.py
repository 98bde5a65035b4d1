"""Generators of bad (and good) inputs, and the four-way verdict the fuzz tests count.

Verdicts:

- ``clean refusal``: an :class:`~hpccloud.errors.HpccloudError` whose one-line message names
  the source (file) and says ``Fix:``;
- ``accepted valid``: accepted, and every invariant of an accepted input holds;
- ``traceback``: any other exception (or a refusal without the source or a fix);
- ``accepted wrong``: accepted although an invariant fails (e.g. NaN prices, a region name
  that is not a safe file name, NaN data read without ``allow_nonfinite``).

``python tests/fuzz/fuzzlib.py --cases 3000`` runs a larger sample by hand and prints
the counts per category (the suite runs a fixed small sample).
"""

from __future__ import annotations

import collections
import copy
import json
import math
import os
import random
import re
import tempfile
import traceback
from pathlib import Path

import numpy as np
import tomli_w

from hpccloud.errors import HpccloudError

ROOT = Path(__file__).resolve().parents[2]
VERDICTS = ("clean refusal", "accepted valid", "traceback", "accepted wrong")
SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def verdict(fn, check, source: str) -> tuple[str, str]:
    """Run ``fn``; classify its outcome; ``check(result)`` lists what is wrong with an acceptance."""
    try:
        result = fn()
    except HpccloudError as exc:
        msg = str(exc)
        if source in msg and "Fix:" in msg and len(msg) < 2000:
            return "clean refusal", msg
        return "traceback", f"unclear refusal: {msg[:300]}"
    except RecursionError:
        return "traceback", "RecursionError"
    except Exception:  # noqa: BLE001 - that is what is counted
        return "traceback", traceback.format_exc(limit=3)[-600:]
    problems = check(result)
    return ("accepted wrong", "; ".join(problems)) if problems else ("accepted valid", "")


# ----------------------------------------------------------------------------- topology

SEEDS = {
    "default": (ROOT / "hpccloud" / "data" / "default_topology.toml").read_text(),
    "three": (ROOT / "examples" / "three-regions.toml").read_text(),
    "slurm": (ROOT / "slurm" / "regions.example.toml").read_text(),
}
HOSTS = ["localhost", "eu-node001", "eu-node128", "us-node7", "rack1-node02", "n5"]

BAD_VALUES = [
    float("nan"), float("inf"), -float("inf"), -1, -0.5, 0, 1e308, 2**63 - 1, True, "",
    " ", "../../x", "a/b", "a\x00b", "a\nb", "*", "+", "a+b", "..", "catalogue", "é-région",
    "x" * 300, [], [[]], {}, {"default": float("nan")}, ["*"], [""], ["n[0-99999999]"],
    ["n[1-x]"], ["n[01-02"], ["rack[1-2]-node[01-02]"], ["us-*"], "even", [0, 1], [0, 0],
    [-1], [99], ["a"], "EU",
]
GOOD_VALUES = [0.05, 0, 1, "eu-x", "EU", "US", ["*"], "even", ["eu-node[001-128]"],
               ["rack[1-2]-node[01-02]"], {"default": 0.1}, True, False]


def _paths(doc, prefix=()):
    yield prefix
    if len(prefix) > 8:  # do not walk into the deeply nested values planted on purpose
        return
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


def _get(doc, path):
    for p in path:
        doc = doc[p]
    return doc


def mutate_topology(rng: random.Random) -> str:
    """One mutated topology file text (structural or byte-level)."""
    import tomllib

    seed = SEEDS[rng.choice(sorted(SEEDS))]
    kind = rng.random()
    if kind < 0.2:  # bytes
        raw = bytearray(seed.encode())
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(4)
            pos = rng.randrange(len(raw) + 1)
            if op == 0 and pos < len(raw):
                raw[pos] = rng.randrange(256)
            elif op == 1:
                raw[pos:pos] = bytes(rng.randrange(128, 256) for _ in range(rng.randint(1, 3)))
            elif op == 2:
                del raw[pos:]
            else:
                depth = rng.choice([10, 100, 3000])
                raw[pos:pos] = b"\nx = " + b"[" * depth + b"]" * depth + b"\n"
        return raw.decode("utf-8", "surrogateescape")
    doc = tomllib.loads(seed)
    for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
        paths = [p for p in _paths(doc) if p]
        path = rng.choice(paths)
        parent = _get(doc, path[:-1])
        op = rng.random()
        if op < 0.6:
            value = copy.deepcopy(rng.choice(GOOD_VALUES if rng.random() < 0.3 else BAD_VALUES))
            if rng.random() < 0.1:
                value = [value]
                for _ in range(rng.choice([5, 50])):
                    value = [value]
            parent[path[-1]] = value
        elif op < 0.75 and isinstance(parent, dict):
            del parent[path[-1]]
        elif op < 0.85 and isinstance(parent, dict):
            parent[rng.choice(["zone", "", "a\x01", "name"])] = copy.deepcopy(rng.choice(BAD_VALUES))
        elif isinstance(parent, dict) and path[-1] == "data_classes" or "data_classes" in doc:
            classes = doc.setdefault("data_classes", {})
            if isinstance(classes, dict):
                classes[rng.choice(["a+b", "", "x/y", "ok", "ok2"])] = rng.choice(
                    [{"regions": []}, {"regions": ["*"]}, {"jurisdictions": ["EU"]}, {}])
    try:
        return tomli_w.dumps(doc)
    except Exception:  # noqa: BLE001 - a value tomli-w cannot write: write the seed instead
        return seed


def check_topology(topo) -> list[str]:
    problems = []
    try:
        json.dumps(topo.to_json(), allow_nan=False)
    except ValueError as exc:
        problems.append(f"report JSON: {exc}")
    for r in topo.regions:
        if not SAFE.fullmatch(r.name) or ".." in r.name or r.name.lower() in {"catalogue", "manifest"}:
            problems.append(f"unsafe region name {r.name!r}")
        if not (math.isfinite(r.price_per_core_hour) and r.price_per_core_hour >= 0):
            problems.append(f"price {r.price_per_core_hour}")
        if any(not (math.isfinite(v) and v >= 0) for v in r.egress_per_gb.values()):
            problems.append(f"egress {r.egress_per_gb}")
    for name, dc in topo.data_classes.items():
        if not SAFE.fullmatch(name) or ".." in name:
            problems.append(f"unsafe class name {name!r}")
        if not dc.regions:
            problems.append(f"class {name!r} may live nowhere")
    if set(topo.rank_region) - set(topo.region_names):
        problems.append("a rank mapped to an undeclared region")
    return problems


def topology_case(rng: random.Random, folder: str) -> tuple[str, str]:
    from hpccloud.topology import read_topology_text, topology_from_text

    text = mutate_topology(rng)
    path = os.path.join(folder, f"t{rng.randrange(10**9)}.toml")
    with open(path, "wb") as fh:
        fh.write(text.encode("utf-8", "surrogateescape"))
    size = rng.choice([1, 2, 3, 4])
    pool = HOSTS if rng.random() < 0.5 else ["eu-node001", "us-node7"]
    hosts = [rng.choice(pool) for _ in range(size)]

    def load():
        t, src = read_topology_text(path)
        return topology_from_text(t, src, size, hosts)

    return verdict(load, check_topology, path)


# ----------------------------------------------------------------------------- HDF5 input

SHAPE = (12, 10)


def hdf5_case(rng: random.Random, folder: str) -> tuple[str, str]:
    """A random input file; accepted is right only when the read equals the intended array."""
    import h5py

    from hpccloud.io.hdf5 import check_input, read_shards
    from hpccloud.shards import tile_2d

    path = os.path.join(folder, f"in{rng.randrange(10**9)}.h5")
    truth = np.random.default_rng(rng.randrange(2**32)).standard_normal(SHAPE)
    expect = truth  # None: any acceptance is wrong
    kind = rng.choice(["ok", "nonfinite", "group", "soft-ok", "soft-dangling", "ext-ok",
                       "ext-dangling", "vds-ok", "vds-missing", "vds-nodset", "dtype", "shape",
                       "scalar", "empty", "corrupt", "truncated", "garbage", "strings", "absent"])
    src = os.path.join(folder, f"src{rng.randrange(10**9)}.h5")
    with h5py.File(src, "w") as f:
        f.create_dataset("d", data=truth)
    if kind in ("garbage",):
        Path(path).write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(0, 3000))))
        expect = None
    else:
        with h5py.File(path, "w") as f:
            if kind in ("ok", "corrupt", "truncated"):
                f.create_dataset("data", data=truth, chunks=(4, 5), fletcher32=True)
            elif kind == "nonfinite":
                bad = truth.copy()
                bad[rng.randrange(SHAPE[0]), rng.randrange(SHAPE[1])] = rng.choice([np.nan, np.inf, -np.inf])
                f.create_dataset("data", data=bad)
                expect = None
            elif kind == "group":
                f.create_group("data")
                expect = None
            elif kind == "soft-ok":
                f.create_dataset("real", data=truth)
                f["data"] = h5py.SoftLink("/real")
            elif kind == "soft-dangling":
                f["data"] = h5py.SoftLink("/gone")
                expect = None
            elif kind == "ext-ok":
                f["data"] = h5py.ExternalLink(os.path.basename(src), "/d")
            elif kind == "ext-dangling":
                f["data"] = h5py.ExternalLink("missing.h5", "/d")
                expect = None
            elif kind.startswith("vds"):
                lay = h5py.VirtualLayout(SHAPE, "<f8")
                name = {"vds-ok": os.path.basename(src), "vds-missing": "gone.h5",
                        "vds-nodset": os.path.basename(src)}[kind]
                lay[:] = h5py.VirtualSource(name, "d" if kind != "vds-nodset" else "nope", shape=SHAPE)
                f.create_virtual_dataset("data", lay, fillvalue=0)
                expect = truth if kind == "vds-ok" else None
            elif kind == "dtype":
                f.create_dataset("data", data=truth.astype(rng.choice(["<f4", "<i4", ">f8"])))
                expect = None
            elif kind == "shape":
                f.create_dataset("data", data=np.zeros((SHAPE[0] + 1, SHAPE[1])))
                expect = None
            elif kind == "scalar":
                f.create_dataset("data", data=1.0)
                expect = None
            elif kind == "empty":
                f.create_dataset("data", shape=(0,), dtype="<f8")
                expect = None
            elif kind == "strings":
                f.create_dataset("data", data=np.full(SHAPE, b"ab"))
                expect = None
            else:
                f.create_dataset("other", data=truth)
                expect = None
        if kind == "corrupt":
            raw = bytearray(Path(path).read_bytes())
            for _ in range(rng.randint(1, 20)):
                pos = rng.randrange(len(raw) // 2, len(raw))
                raw[pos] ^= 1 << rng.randrange(8)
            Path(path).write_bytes(bytes(raw))
            expect = "maybe"
        elif kind == "truncated":
            raw = Path(path).read_bytes()
            Path(path).write_bytes(raw[: rng.randrange(len(raw))])
            expect = None
    shard_map = tile_2d(SHAPE, (2, 2), "<f8", size=1)

    def load():
        check_input(path, "data", SHAPE, "<f8")
        got = read_shards(path, "data", shard_map, 0)
        out = np.full(SHAPE, np.nan)
        for sid, arr in got.items():
            out[shard_map.shards[sid].index] = arr
        return out

    def check(out):
        if expect is None:
            return [f"{kind}: accepted"]
        if not np.isfinite(out).all():
            return [f"{kind}: non-finite values accepted"]
        if isinstance(expect, np.ndarray) and not np.array_equal(out, expect):
            return [f"{kind}: values differ from the file's data"]
        if isinstance(expect, str):  # corrupted: accepted only if the data bytes were untouched
            return [] if np.array_equal(out, truth) else [f"{kind}: corrupted values accepted"]
        return []

    return verdict(load, check, path)


# ----------------------------------------------------------------------------- run config

CONFIG_BASE = {"workload": "stencil2d", "steps": 4, "rebalance_every": 2, "balancer": "topo",
               "seed": 1, "checkpoint_every": 0, "initial_placement": True,
               "params": {"n": 64, "grid": 4}}
CONFIG_BAD = [
    "10", "no", "yes", True, False, 0, -1, 1.5, float("nan"), float("inf"), 2**70, "", [], {},
    [1], "stencil2d", "nope", "garbage", 1e300, -0.0,
]
PARAM_KEYS = {"stencil2d": ["n", "grid", "hot_sweeps", "hot_radius", "period", "eu_fraction", "dtype"],
              "kmeans": ["n", "d", "k", "shards", "eu_fraction"],
              "particles": ["n", "grid", "dt", "strength", "drag", "bins"],
              "mandelbrot": ["n", "grid", "max_iter", "zoom", "centre_x", "centre_y"],
              "spmv": ["n", "shards", "mean_row"]}


def config_case(rng: random.Random, folder: str) -> tuple[str, str]:
    """A mutated ``--config`` file, then the workload it names: refused cleanly or valid."""
    from hpccloud.preflight import check_memory, node_memory
    from hpccloud.runner.options import RunConfig, config_from_mapping, read_config
    from hpccloud.workloads import make_workload

    doc = copy.deepcopy(CONFIG_BASE)
    workload = doc["workload"] = rng.choice(sorted(PARAM_KEYS))
    doc["params"] = {}
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        where = rng.random()
        if where < 0.4:
            key = rng.choice(sorted(RunConfig.__struct_fields__))
            if key in ("params", "probe_sizes"):
                continue
            doc[key] = rng.choice(CONFIG_BAD)
        elif where < 0.9:
            doc["params"][rng.choice(PARAM_KEYS[workload])] = rng.choice(
                CONFIG_BAD + [1, 2, 8, 64, 0.5, "float32"])
        else:
            doc[rng.choice(["colour", "Steps", "params.n"])] = 1
    path = os.path.join(folder, f"c{rng.randrange(10**9)}.toml")
    try:
        text = tomli_w.dumps(doc)
    except Exception:  # noqa: BLE001 - e.g. an int TOML cannot hold: not a config case
        text = tomli_w.dumps(CONFIG_BASE)
    Path(path).write_text(text)

    def load():
        cfg = config_from_mapping(read_config(path), path)
        cfg.validate(path)
        wl = make_workload(cfg.workload, cfg.params, cfg.seed)
        est = wl.estimate(4)
        # what the validation pass does next: the job's memory against this node's
        have = node_memory().available_bytes
        check_memory(["node"] * 4, [est.peak_bytes_per_rank] * 4, [have] * 4,
                     f"workload {wl.name}", "lower --param n")
        return cfg, wl, est

    def check(result):
        cfg, wl, est = result
        problems = []
        for key in ("steps", "rebalance_every", "seed", "checkpoint_every"):
            v = getattr(cfg, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                problems.append(f"{key}={v!r}")
        if not isinstance(cfg.initial_placement, bool):
            problems.append(f"initial_placement={cfg.initial_placement!r}")
        for k, v in wl.params.items():
            if isinstance(v, float) and not math.isfinite(v):
                problems.append(f"param {k}={v}")
        if not 0 < est.peak_bytes_per_rank < 2**62:
            problems.append(f"estimate {est}")
        return problems

    v, detail = verdict(load, check, path)
    if v == "traceback" and detail.startswith("unclear refusal") and "Fix:" in detail \
            and re.search(r"parameter \w+=|--[a-z-]+|workload '", detail):
        v = "clean refusal"  # names the parameter or option (not the file): still clear
    return v, detail


def run(cases: int, seed: int = 0) -> dict[str, collections.Counter]:
    counts = {"topology": collections.Counter(), "hdf5": collections.Counter(),
              "config": collections.Counter()}
    examples: dict[tuple[str, str], str] = {}
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as folder:
        for i in range(cases):
            for name, fn in (("topology", topology_case), ("hdf5", hdf5_case),
                             ("config", config_case)):
                v, detail = fn(rng, folder)
                counts[name][v] += 1
                if v in ("traceback", "accepted wrong"):
                    examples.setdefault((name, detail[:80]), detail)
            if i % 50 == 49:
                for f in os.listdir(folder):
                    os.unlink(os.path.join(folder, f))
    for (name, _), detail in list(examples.items())[:20]:
        print(f"--- {name}: {detail}")
    return counts


if __name__ == "__main__":
    import argparse
    import time

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    t0 = time.perf_counter()
    result = run(a.cases, a.seed)
    for name, c in result.items():
        print(f"{name:9s} " + "  ".join(f"{v}: {c[v]}" for v in VERDICTS) + f"  (total {sum(c.values())})")
    print(f"{time.perf_counter() - t0:.1f} s")
