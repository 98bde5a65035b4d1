"""Logging for hpccloud jobs: levels, rank 0 on the console, per-rank files, warnings once.

Every module logs through ``logging.getLogger("hpccloud...")`` (see
:func:`get_logger`); :func:`setup` decides where records go:

* **Console** — rank 0 only by default (every rank runs the same program, so
  the same line from N ranks is noise). ``INFO`` lines go to stdout as the bare
  message (what ``print`` wrote before), ``WARNING`` and above to stderr as
  ``hpccloud: warning: …``. Levels: ``-q`` shows warnings and errors only,
  the default adds progress (``INFO``), ``-v`` adds ``DEBUG``.
* **Per-rank files** on request (``--log-dir DIR``): every rank writes
  ``DIR/rank-00003.log`` with time stamps and levels, at least ``INFO``.
* **Every warning once per job.** Rank 0 prints a warning the first time it
  is logged and never again. A warning logged on another rank is kept until the
  next :func:`flush_warnings` (collective: the runner calls it after set-up, at
  rebalances and at the end), which gathers them to rank 0; rank 0 prints each
  distinct message once, naming the ranks it came from. Errors are printed
  once by the CLI (the collective ones by rank 0).

>>> import io
>>> out, err = io.StringIO(), io.StringIO()
>>> _ = setup(rank=0, size=1, verbosity=0, stdout=out, stderr=err)
>>> log = get_logger("demo")
>>> log.info("step 1/2"); log.warning("slow link"); log.warning("slow link"); log.debug("hidden")
>>> out.getvalue(), err.getvalue()
('step 1/2\\n', 'hpccloud: warning: slow link\\n')
>>> teardown()
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

ROOT = "hpccloud"
_LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}


def get_logger(name: str | None = None) -> logging.Logger:
    """The ``hpccloud`` logger or its child ``hpccloud.<name>``."""
    return logging.getLogger(ROOT if not name else f"{ROOT}.{name}")


def level_of(verbosity: int) -> int:
    """``logging`` level for ``-q`` (−1), the default (0) and ``-v`` (1 or more)."""
    return _LEVELS[max(-1, min(1, int(verbosity)))]


class _ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"hpccloud: error: {msg}"
        if record.levelno >= logging.WARNING:
            return f"hpccloud: warning: {msg}"
        return msg


class _Once(logging.Filter):
    """Lets each distinct WARNING-or-worse message through once; keeps INFO and DEBUG."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        msg = record.getMessage()
        if msg in self.seen:
            return False
        self.seen.add(msg)
        return True


class _Pending(logging.Handler):
    """On ranks other than 0: keeps WARNING-or-worse messages for :func:`flush_warnings`."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        item = (record.levelno, record.getMessage())
        if item not in self.messages:
            self.messages.append(item)


class _Levels(logging.Filter):
    def __init__(self, low: int, high: int) -> None:
        super().__init__()
        self.low, self.high = low, high

    def filter(self, record: logging.LogRecord) -> bool:
        return self.low <= record.levelno < self.high


class JobLog:
    """The handlers :func:`setup` installed (for :func:`flush_warnings` and :func:`teardown`)."""

    def __init__(self, rank: int, handlers: list[logging.Handler], once: _Once | None,
                 pending: _Pending | None, path: str | None):
        self.rank, self.handlers, self.once, self.pending, self.path = rank, handlers, once, pending, path


_CURRENT: JobLog | None = None


def setup(rank: int, size: int, verbosity: int = 0, log_dir: str | os.PathLike | None = None,
          all_ranks: bool = False, stdout: TextIO | None = None,
          stderr: TextIO | None = None) -> JobLog:
    """Install the job's handlers on the ``hpccloud`` logger (replacing earlier ones).

    Parameters
    ----------
    rank, size : int
        This process's rank and the job's size.
    verbosity : int
        −1 (``-q``), 0 (default) or 1 (``-v``).
    log_dir : path, optional
        Write ``rank-NNNNN.log`` for every rank here (created if missing).
    all_ranks : bool
        Every rank logs to the console, each line prefixed ``[rank N]``.
    stdout, stderr : text streams, optional
        Where console lines go (default: ``sys.stdout``/``sys.stderr`` at log time).
    """
    global _CURRENT
    teardown()
    level = level_of(verbosity)
    logger = get_logger()
    logger.setLevel(min(level, logging.INFO) if log_dir else level)
    handlers: list[logging.Handler] = []
    once = pending = None
    if rank == 0 or all_ranks:
        once = _Once()
        fmt = _ConsoleFormatter() if not all_ranks else _RankFormatter(rank)
        out = _StreamHandler(stdout, "stdout")
        out.addFilter(_Levels(0, logging.WARNING))
        err = _StreamHandler(stderr, "stderr")
        err.addFilter(_Levels(logging.WARNING, 1 << 30))
        if not all_ranks:
            err.addFilter(once)
        for h in (out, err):
            h.setFormatter(fmt)
            h.setLevel(level)
            handlers.append(h)
    if rank != 0 and not all_ranks:
        pending = _Pending()
        handlers.append(pending)
    path = None
    if log_dir:
        path = os.path.join(os.fspath(log_dir), f"rank-{rank:05d}.log")
        fh = _log_file(os.fspath(log_dir), path)
        fh.setFormatter(logging.Formatter(f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s"))
        fh.setLevel(min(level, logging.INFO))
        handlers.append(fh)
        import socket

        # the file's first line says whose it is (this rank's console may print nothing)
        fh.emit(logging.makeLogRecord({
            "name": ROOT, "levelno": logging.INFO, "levelname": "INFO",
            "msg": f"rank {rank} of {size}, host {socket.gethostname()}, pid {os.getpid()}"}))
    for handler in handlers:
        logger.addHandler(handler)
    _CURRENT = JobLog(rank, handlers, once, pending, path)
    return _CURRENT


def _log_file(log_dir: str, path: str) -> logging.FileHandler:
    """The rank's log file in ``log_dir`` (made if missing); bad paths are a ConfigError."""
    from hpccloud.errors import ConfigError

    if os.path.exists(log_dir) and not os.path.isdir(log_dir):
        raise ConfigError(f"--log-dir {log_dir}: is a file, not a folder. Fix: give a folder "
                          "path (rank-NNNNN.log files go there), or move the file away")
    try:
        os.makedirs(log_dir, exist_ok=True)
        return logging.FileHandler(path, mode="w", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--log-dir {log_dir}: cannot write {os.path.basename(path)} there "
                          f"({exc.strerror}). Fix: choose a folder you may write") from None


class _RankFormatter(_ConsoleFormatter):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def format(self, record: logging.LogRecord) -> str:
        return f"[rank {self.rank}] {super().format(record)}"


class _StreamHandler(logging.StreamHandler):
    """A stream handler that looks up ``sys.stdout``/``sys.stderr`` at each record (so
    pytest's capture and redirections made after set-up are honoured)."""

    def __init__(self, stream: TextIO | None, name: str) -> None:
        super().__init__(stream)
        self._fixed, self._name = stream, name

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = self._fixed if self._fixed is not None else getattr(sys, self._name)
        super().emit(record)


def flush_warnings(comm) -> None:
    """Collective: print the warnings other ranks logged since the last call, once each.

    Rank 0 prints every distinct message it has not printed yet, with the ranks
    that logged it when that is not rank 0 alone. Without :func:`setup` (or with
    ``all_ranks``) it only keeps the ranks in step.
    """
    cur = _CURRENT
    mine = []
    if cur is not None and cur.pending is not None:
        mine, cur.pending.messages = cur.pending.messages, []
    parts = comm.gather(mine, root=0)
    if comm.Get_rank() != 0 or cur is None or cur.once is None:
        return
    by_message: dict[tuple[int, str], list[int]] = {}
    for rank, items in enumerate(parts):
        for item in items:
            by_message.setdefault(item, []).append(rank)
    logger = get_logger()
    for (levelno, msg), ranks in by_message.items():
        if msg in cur.once.seen:  # rank 0 printed it already
            continue
        cur.once.seen.add(msg)
        logger.log(levelno, f"{msg} (rank{'s' if len(ranks) > 1 else ''} "
                            f"{', '.join(map(str, ranks))})")


def teardown() -> None:
    """Remove the handlers :func:`setup` installed."""
    global _CURRENT
    if _CURRENT is None:
        return
    logger = get_logger()
    for h in _CURRENT.handlers:
        logger.removeHandler(h)
        h.close()
    _CURRENT = None


def add_logging_args(parser) -> None:
    """``-v/--verbose``, ``-q/--quiet``, ``--log-dir DIR`` and ``--log-all-ranks``."""
    group = parser.add_argument_group("logging")
    group.add_argument("-v", "--verbose", action="count", default=0,
                       help="more detail (debug messages)")
    if not any("--quiet" in a.option_strings for a in parser._actions):
        group.add_argument("-q", "--quiet", action="store_true", default=None,
                           help="warnings, errors and the summary only")
    else:  # the command has --quiet already (hpccloud run's option): -q is its short form
        group.add_argument("-q", dest="quiet", action="store_const", const=True,
                           help="short for --quiet: warnings, errors and the summary only")
    group.add_argument("--log-dir", metavar="DIR", default=None,
                       help="also write one log file per rank here (rank-NNNNN.log)")
    group.add_argument("--log-all-ranks", action="store_true",
                       help="every rank logs to the console, prefixed [rank N]")


def verbosity_of(args) -> int:
    """−1, 0 or 1 from parsed :func:`add_logging_args` flags."""
    return -1 if getattr(args, "quiet", False) else min(1, int(getattr(args, "verbose", 0) or 0))


__all__ = ["JobLog", "add_logging_args", "flush_warnings", "get_logger", "level_of", "setup",
           "teardown", "verbosity_of"]
