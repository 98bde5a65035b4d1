"""End to end under mpiexec: `hpccloud run --output DIR --trace FILE --json REPORT`.

The outputs open with h5py as self-describing files (provenance, units, dimension
scales), the XDMF sidecar points at a dataset of the right shape, and the trace's
events add up to the report's step times.
"""

import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict

import h5py
import numpy as np

from hpccloud.testing.mpi_pytest import run_mpi
from hpccloud.trace import load_trace

N, GRID, STEPS = 192, 6, 8


def _run(tmp_path, nranks):
    out, trace, rep = tmp_path / "out", tmp_path / "trace.json", tmp_path / "report.json"
    args = [sys.executable, "-m", "hpccloud", "run", "--workload", "stencil2d",
            "--param", f"n={N}", "--param", f"grid={GRID}", "--param", "period=8",
            "--steps", str(STEPS), "--rebalance-every", "3", "--balancer", "topo",
            "--output", str(out), "--trace", str(trace), "--json", str(rep), "-q"]
    res = run_mpi(args, nranks, timeout_s=300)
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return out, trace, json.loads(rep.read_text())


def test_outputs_and_trace_of_a_real_run(tmp_path):
    nranks = 2
    out, trace, rep = _run(tmp_path, nranks)

    # ---- self-describing HDF5
    with h5py.File(out / "catalogue.h5", "r") as f:
        assert f.attrs["workload"] == "stencil2d" and f.attrs["step"] == STEPS
        assert f.attrs["ranks"] == nranks and len(f.attrs["config_digest"]) == 64
        assert json.loads(f.attrs["parameters"])["n"] == N and f.attrs["param_grid"] == GRID
        run_id = f.attrs["run_id"]
        ds = f["data"]
        assert ds.shape == (N, N) and ds.attrs["units"] == "1"
        assert [d.label for d in ds.dims] == ["y", "x"]
        np.testing.assert_allclose(ds.dims[1][0][()], (np.arange(N) + 0.5) / N)
        assert np.isfinite(ds[()]).all()
    for region in ("eu-north", "us-east"):
        with h5py.File(out / f"{region}.h5", "r") as f:
            assert f.attrs["run_id"] == run_id and f.attrs["region"] == region

    # ---- XDMF sidecar
    root = ET.parse(out / "catalogue.xmf").getroot()
    grid = root.find("Domain/Grid")
    assert grid.find("Topology").get("TopologyType") == "2DCoRectMesh"
    assert grid.find("Topology").get("Dimensions") == f"{N} {N}"
    item = grid.find("Attribute/DataItem")
    fname, _, dset = item.text.strip().partition(":")
    with h5py.File(out / fname, "r") as f:
        assert f[dset].shape == tuple(int(n) for n in item.get("Dimensions").split())

    # ---- trace: named ranks, and per step the events add up to the report's step time
    doc = json.loads(trace.read_text())
    assert doc["otherData"]["run_id"] == run_id
    names = {e["pid"]: e["args"]["name"] for e in doc["traceEvents"]
             if e["ph"] == "M" and e["name"] == "process_name"}
    assert names == {0: "rank 0 (eu-north)", 1: "rank 1 (us-east)"}
    events = load_trace(trace)
    busy = defaultdict(float)   # (step, rank) -> halo + kernels + the workload's collectives
    wait = defaultdict(float)   # (step, rank) -> the step's closing allgather
    wall = {}                   # (step, rank) -> the step event's duration
    end = {}                    # (step, rank) -> when it ended (the sync's exit)
    for e in events:
        step = (e.get("args") or {}).get("step")
        if step is None:
            continue
        key = (step, e["pid"])
        if e["cat"] in ("halo", "kernel", "collective"):
            busy[key] += e["dur"] / 1e6
        elif e["cat"] == "wait":
            wait[key] += e["dur"] / 1e6
        elif e["cat"] == "step":
            wall[key] = e["dur"] / 1e6
            end[key] = (e["ts"] + e["dur"]) / 1e6
    assert len(rep["steps"]) == STEPS
    skews = []
    for rec in rep["steps"]:
        s = rec["step"]
        for r in range(nranks):
            # every rank's events fill its step: halo + kernels + collectives + sync = the
            # step's wall time (missing: the loop's own bookkeeping between the events)
            assert abs(busy[(s, r)] + wait[(s, r)] - wall[(s, r)]) <= 0.03 * wall[(s, r)] + 1e-3, \
                (s, r, busy[(s, r)], wait[(s, r)], wall[(s, r)])
        # rank 0's step event is the report's step time (rank 0 writes the report) ...
        assert abs(wall[(s, 0)] - rec["step_s"]) <= 1e-4, (s, wall[(s, 0)], rec["step_s"])
        # ... and every rank leaves the step's sync at about the same moment on the common clock
        skews.append(max(end[(s, r)] for r in range(nranks)) - min(end[(s, r)] for r in range(nranks)))
        # and the slowest rank's busy events are the report's active time
        assert abs(max(busy[(s, r)] for r in range(nranks)) - rec["active_s"]) \
            <= 0.03 * rec["active_s"] + 1e-3, (s, rec)
    # (median over the steps: a busy shared machine delays a sleeping rank by a scheduler slice)
    step_med = float(np.median([rec["step_s"] for rec in rep["steps"]]))
    assert float(np.median(skews)) <= 0.25 * step_med + 5e-3, (skews, step_med)
    # rebalance phases and every transfer of the audit are on the timeline
    cats = defaultdict(list)
    for e in events:
        cats[e["cat"]].append(e)
    assert {e["name"] for e in cats["rebalance"]} >= {"measure", "plan"}
    assert len(cats["transfer"]) == len(rep["audit"])
    assert any(e["name"] == "write output" for e in cats["io"])

