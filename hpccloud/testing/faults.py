"""Fault injection for the recovery tests: a rank kills or stops itself at a given step.

``HPCCLOUD_TEST_FAULT=kill:RANK:STEP:MARKER`` (or ``stop:...``) makes rank
RANK send itself SIGKILL (or SIGSTOP) when it starts step STEP, once: the
marker file is created first, and a fault whose marker exists is spent, so a
relaunched job runs through. Nothing happens when the variable is unset.
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "HPCCLOUD_TEST_FAULT"


def parse_fault(spec: str | None) -> tuple[str, int, int, str] | None:
    """``(kind, rank, step, marker)`` or None.

    >>> parse_fault("kill:2:7:/tmp/m")
    ('kill', 2, 7, '/tmp/m')
    >>> parse_fault("") is None
    True
    """
    if not spec:
        return None
    kind, rank, step, marker = spec.split(":", 3)
    if kind not in ("kill", "stop"):
        raise ValueError(f"{FAULT_ENV}={spec!r}: kind must be kill or stop")
    return kind, int(rank), int(step), marker


def maybe_fault(rank: int, step: int) -> None:
    """Inject the configured fault if this is its rank and step and it is not spent."""
    fault = parse_fault(os.environ.get(FAULT_ENV))
    if fault is None or fault[1] != rank or fault[2] != step:
        return
    kind, _, _, marker = fault
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # spent: a relaunch runs through
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL if kind == "kill" else signal.SIGSTOP)


__all__ = ["FAULT_ENV", "maybe_fault", "parse_fault"]
