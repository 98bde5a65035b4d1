"""The Chrome trace-event timeline: format, clock alignment, gathering to rank 0."""

import json
import os
import time

import pytest

from hpccloud.trace import LANES, Tracer, load_trace, write_trace


def test_events_are_complete_events_on_named_lanes(tmp_path):
    tr = Tracer()
    t0 = time.perf_counter()
    with tr.span("stencil2d", "kernel", step=3, shard=7):
        time.sleep(0.01)
    tr.add("halo", "halo", t0 - 0.002, t0, step=3)
    events = tr.chrome_events(rank=2, region="eu-north")
    meta = {(e["name"], e["tid"]): e["args"] for e in events if e["ph"] == "M"}
    assert meta[("process_name", 0)] == {"name": "rank 2 (eu-north)"}
    assert meta[("thread_name", LANES.index("kernel") + 1)] == {"name": "kernel"}
    assert meta[("thread_name", LANES.index("halo") + 1)] == {"name": "halo"}
    xs = [e for e in events if e["ph"] == "X"]
    kernel = next(e for e in xs if e["cat"] == "kernel")
    assert kernel["pid"] == 2 and kernel["args"] == {"step": 3, "shard": 7}
    assert 9_000 <= kernel["dur"] <= 200_000   # µs
    halo = next(e for e in xs if e["cat"] == "halo")
    assert halo["dur"] == pytest.approx(2_000, abs=1)
    assert kernel["ts"] >= halo["ts"] + halo["dur"] - 1
    path = tmp_path / "t.json"
    write_trace(path, events, {"run_id": "r"})
    doc = json.loads(path.read_text())
    assert doc["displayTimeUnit"] == "ms" and doc["otherData"]["run_id"] == "r"
    assert len(load_trace(path)) == 2


def test_posix_stamped_records_land_on_the_perf_counter_clock():
    tr = Tracer()
    now_perf, now_posix = time.perf_counter(), time.time()
    tr.add_posix("shard 4", "transfer", now_posix, 0.5)
    (ev,) = [e for e in tr.chrome_events(0) if e["ph"] == "X"]
    assert ev["ts"] / 1e6 == pytest.approx(now_perf - 0.5, abs=2e-3)
    assert ev["dur"] == pytest.approx(5e5)


def test_disabled_tracer_keeps_nothing():
    tr = Tracer(enabled=False)
    with tr.span("x", "kernel"):
        pass
    tr.add("y", "halo", 0.0, 1.0)
    tr.add_posix("z", "transfer", time.time(), 0.1)
    assert len(tr) == 0


@pytest.mark.hpccloud_mpi(ranks=[2, 3], timeout=120)
def test_clock_sync_and_gather(comm, tmp_path_factory):
    rank, size = comm.Get_rank(), comm.Get_size()
    path = comm.bcast(str(tmp_path_factory.mktemp("trace") / "t.json") if rank == 0 else None)
    tr = Tracer()
    tr.sync_clock(comm)
    # one host: perf_counter is CLOCK_MONOTONIC, shared by every process, so the measured
    # offset is the estimate's error alone
    assert abs(tr.offset_s) < 5e-3, tr.offset_s
    comm.Barrier()
    t0 = time.perf_counter()
    time.sleep(0.02 * (rank + 1))
    tr.add("work", "kernel", t0, time.perf_counter(), step=0)
    tr.gather_write(comm, path, [f"region-{r}" for r in range(size)], {"run_id": "x"})
    if rank == 0:
        with open(path) as fh:
            doc = json.load(fh)
        names = {e["pid"]: e["args"]["name"] for e in doc["traceEvents"]
                 if e["ph"] == "M" and e["name"] == "process_name"}
        assert names == {r: f"rank {r} (region-{r})" for r in range(size)}
        work = sorted((e for e in load_trace(path) if e["name"] == "work"), key=lambda e: e["pid"])
        assert [e["pid"] for e in work] == list(range(size))
        for r, e in enumerate(work):
            assert e["dur"] >= 0.02 * (r + 1) * 1e6 * 0.95
        # they left one barrier: starts agree to within a scheduler slice or so (2 cores, 3 ranks)
        starts = [e["ts"] for e in work]
        assert max(starts) - min(starts) < 15_000, starts


def test_otf2_archive_has_every_event_nested(tmp_path):
    otf2 = pytest.importorskip("otf2")
    from hpccloud.trace_otf2 import write_otf2

    tr = Tracer()
    t = time.perf_counter()
    tr.add("step", "step", t, t + 1.0, step=0)
    tr.add("halo", "halo", t, t + 0.1, step=0)
    tr.add("stencil2d", "kernel", t + 0.1, t + 0.5, step=0, shard=0)
    tr.add("stencil2d", "kernel", t + 0.45, t + 0.9, step=0, shard=1)  # overlaps: clipped
    events = tr.chrome_events(0, "eu-north") + tr.chrome_events(1, "us-east")
    path = tmp_path / "run.otf2"
    write_otf2(path, events)
    write_otf2(path, events)  # replaces the archive whole
    assert sorted(os.listdir(path)) == ["traces", "traces.def", "traces.otf2"]
    assert sorted(os.listdir(tmp_path)) == ["run.otf2"]
    with otf2.reader.open(str(path / "traces.otf2")) as reader:
        groups = sorted(g.name for g in reader.definitions.location_groups)
        kinds = [type(ev).__name__ for _, ev in reader.events]
    assert groups == ["rank 0 (eu-north)", "rank 1 (us-east)"]
    assert kinds.count("Enter") == kinds.count("Leave") == 8
