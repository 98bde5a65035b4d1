"""Session timings and per-MPI test counts of the site-MPI tests, printed at the end of the run."""

from __future__ import annotations

import sitempi


def pytest_terminal_summary(terminalreporter):
    if not (sitempi.TIMINGS or sitempi.COUNTS):
        return
    tr = terminalreporter
    tr.section("site MPI (mpi4py built from source)")
    for name, counts in sitempi.COUNTS.items():
        tr.write_line(f"  {name:<48} {counts}")
    for name, seconds in sitempi.TIMINGS.items():
        tr.write_line(f"  {name:<48} {seconds:7.2f} s")
