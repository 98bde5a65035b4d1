"""Logging: levels from -q/-v, rank 0 on the console, per-rank files, each warning once per job."""

import io

import pytest

from hpccloud import log


@pytest.fixture
def streams():
    out, err = io.StringIO(), io.StringIO()
    yield out, err
    log.teardown()


@pytest.mark.parametrize("verbosity, shown", [(-1, []), (0, ["info"]), (1, ["debug", "info"])])
def test_levels(streams, verbosity, shown):
    out, err = streams
    log.setup(0, 1, verbosity, stdout=out, stderr=err)
    lg = log.get_logger("runner")
    lg.debug("debug")
    lg.info("info")
    lg.warning("warn")
    assert out.getvalue().split() == shown
    assert err.getvalue() == "hpccloud: warning: warn\n"


def test_other_ranks_stay_silent_and_files_are_per_rank(streams, tmp_path):
    out, err = streams
    log.setup(3, 4, 0, log_dir=tmp_path / "logs", stdout=out, stderr=err)
    lg = log.get_logger("runner")
    lg.info("step 1/10")
    lg.warning("link 3->0 is slow")
    assert out.getvalue() == "" and err.getvalue() == ""
    text = (tmp_path / "logs" / "rank-00003.log").read_text()
    assert "rank 3 INFO hpccloud: rank 3 of 4, host " in text.splitlines()[0]
    assert "rank 3 INFO hpccloud.runner: step 1/10" in text
    assert "rank 3 WARNING hpccloud.runner: link 3->0 is slow" in text


def test_all_ranks_prefixes_the_rank(streams):
    out, err = streams
    log.setup(2, 4, 0, all_ranks=True, stdout=out, stderr=err)
    log.get_logger().info("hello")
    assert out.getvalue() == "[rank 2] hello\n"


def test_verbosity_flags():
    import argparse

    p = argparse.ArgumentParser()
    log.add_logging_args(p)
    assert log.verbosity_of(p.parse_args([])) == 0
    assert log.verbosity_of(p.parse_args(["-q"])) == -1
    assert log.verbosity_of(p.parse_args(["-vv"])) == 1
    assert p.parse_args(["--log-dir", "d"]).log_dir == "d"


@pytest.mark.hpccloud_mpi(ranks=[3], timeout=120)
def test_every_warning_once_per_job(comm):
    rank = comm.Get_rank()
    out, err = io.StringIO(), io.StringIO()
    log.setup(rank, comm.Get_size(), 0, stdout=out, stderr=err)
    lg = log.get_logger("runner")
    lg.warning("everyone sees this")          # all ranks
    if rank > 0:
        lg.warning("only the others see this")  # ranks 1 and 2
        lg.warning("only the others see this")
    if rank == 2:
        lg.error("rank 2 alone")
    log.flush_warnings(comm)
    log.flush_warnings(comm)                  # nothing new: prints nothing
    log.teardown()
    lines = err.getvalue().splitlines()
    if rank == 0:
        assert lines == ["hpccloud: warning: everyone sees this",
                         "hpccloud: warning: only the others see this (ranks 1, 2)",
                         "hpccloud: error: rank 2 alone (rank 2)"], lines
    else:
        assert lines == []
