"""Supervised recovery: relaunch a job from its newest verified checkpoint when it fails.

``hpccloud supervise [options] -- LAUNCHER ... hpccloud run ... --checkpoint-dir D``
runs the command (``mpiexec -n 4 ...`` or, inside a Slurm allocation,
``srun --mpi=pmi2 ...`` or the venv's ``mpiexec``) in its own process group.
When it fails — a rank killed (the launcher ends the job at once), a stalled
rank (the job's watchdog ends it with exit 75), any other runtime failure — the
supervisor picks the newest checkpoint under ``D`` that verifies (manifest
digest/MAC and every shard's checksum; newer ones that do not are recorded and
skipped), and relaunches the command with ``--restart`` pointing at it,
optionally without a region (``--exclude-region NAME``: the launcher's rank
count is lowered by that region's ranks and the run drops the region from its
topology). Bad input (exit 2) is never retried: it would fail the same way.

The job tells the supervisor how far it got through a progress file (rank 0
appends one line per completed step; the path is in ``HPCCLOUD_PROGRESS_FILE``),
so each recovery records what failed, which checkpoint it resumed from, the
steps lost and the seconds from the failure to the first step completed
again. The records are added to the run's ``--json`` report as
``"recoveries"`` and printed.

Everything but :func:`supervise` itself is pure (command-line rewriting,
progress parsing), so it is tested without launching anything.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from hpccloud.errors import ConfigError, InvalidArgument

PROGRESS_ENV = "HPCCLOUD_PROGRESS_FILE"
#: exit codes that are never retried: bad input fails the same way again
NO_RETRY = (2,)


# ----------------------------------------------------------------------------- command lines


def _flag_value(cmd: Sequence[str], names: Sequence[str]) -> tuple[int, str | None]:
    """Index and value of the last ``--name V`` / ``--name=V`` in ``cmd`` (``(-1, None)`` if absent)."""
    found: tuple[int, str | None] = (-1, None)
    for i, a in enumerate(cmd):
        for n in names:
            if a == n and i + 1 < len(cmd):
                found = (i, cmd[i + 1])
            elif a.startswith(n + "="):
                found = (i, a.split("=", 1)[1])
    return found


def command_value(cmd: Sequence[str], name: str) -> str | None:
    """The value of ``--name`` in ``cmd``.

    >>> command_value(["mpiexec", "-n", "2", "hpccloud", "run", "--checkpoint-dir=c"], "--checkpoint-dir")
    'c'
    """
    return _flag_value(cmd, [name])[1]


def with_flag(cmd: Sequence[str], name: str, value: str) -> list[str]:
    """``cmd`` with ``--name value`` set (replacing any earlier one, else appended).

    >>> with_flag(["run", "--restart", "a", "--steps", "4"], "--restart", "b")
    ['run', '--restart', 'b', '--steps', '4']
    >>> with_flag(["run"], "--restart", "b")
    ['run', '--restart', 'b']
    """
    out = list(cmd)
    i, _ = _flag_value(out, [name])
    if i < 0:
        return [*out, name, value]
    if out[i] == name:
        out[i + 1] = value
    else:
        out[i] = f"{name}={value}"
    return out


def launcher_ranks(cmd: Sequence[str]) -> tuple[int, int | None]:
    """Index and value of the launcher's rank count (``-n``/``-np``/``--ntasks``) before ``hpccloud``.

    >>> launcher_ranks(["mpiexec", "-n", "4", "hpccloud", "run", "-n", "9"])
    (1, 4)
    >>> launcher_ranks(["srun", "--mpi=pmi2", "--ntasks=3", "hpccloud", "run"])
    (2, 3)
    """
    head = list(cmd)
    for j, a in enumerate(cmd):  # the launcher's own options come before the program
        if os.path.basename(a) == "hpccloud" or (a == "-m" and j + 1 < len(cmd)
                                                 and cmd[j + 1].startswith("hpccloud")):
            head = list(cmd[:j])
            break
    i, v = _flag_value(head, ["-n", "-np", "--np", "--ntasks"])
    if i < 0 or v is None or not v.isdigit():
        return -1, None
    return i, int(v)


def with_ranks(cmd: Sequence[str], ranks: int) -> list[str]:
    """``cmd`` with the launcher's rank count set to ``ranks``.

    >>> with_ranks(["mpiexec", "-n", "4", "hpccloud", "run"], 2)
    ['mpiexec', '-n', '2', 'hpccloud', 'run']
    """
    i, v = launcher_ranks(cmd)
    if v is None:
        raise InvalidArgument("supervise --exclude-region: cannot find the launcher's rank count "
                              "(-n N, -np N or --ntasks N) in the command. Fix: give it explicitly")
    out = list(cmd)
    if "=" in out[i]:
        out[i] = f"{out[i].split('=', 1)[0]}={ranks}"
    else:
        out[i + 1] = str(ranks)
    return out


# ----------------------------------------------------------------------------- progress


def read_progress(path: str) -> dict[str, Any]:
    """Parse a progress file: ``step N T`` / ``checkpoint N PATH T`` / ``start N T`` lines.

    Returns the last step completed, the first step of the run (its restart
    step), the wall time of the first completed step, and the checkpoints
    published. A torn last line (the job died mid-write) is ignored.
    """
    out: dict[str, Any] = {"last_step": None, "start_step": None, "first_step_t": None,
                           "checkpoints": []}
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        parts = line.split("\t")
        try:
            if parts[0] == "start" and len(parts) == 3:
                out["start_step"] = int(parts[1])
            elif parts[0] == "step" and len(parts) == 3:
                out["last_step"] = int(parts[1])
                if out["first_step_t"] is None:
                    out["first_step_t"] = float(parts[2])
            elif parts[0] == "checkpoint" and len(parts) == 4:
                out["checkpoints"].append((int(parts[1]), parts[2]))
        except ValueError:
            continue
    return out


class ProgressWriter:
    """Rank 0's side of the progress file (a no-op when the job is not supervised)."""

    def __init__(self, path: str | None = None):
        path = path if path is not None else os.environ.get(PROGRESS_ENV)
        self.fh = open(path, "a", encoding="utf-8", buffering=1) if path else None  # noqa: SIM115

    def _line(self, *fields) -> None:
        if self.fh is not None:
            self.fh.write("\t".join(str(f) for f in fields) + "\n")

    def start(self, step: int) -> None:
        self._line("start", step, f"{time.time():.6f}")

    def step(self, done: int) -> None:
        """``done`` steps are complete."""
        self._line("step", done, f"{time.time():.6f}")

    def checkpoint(self, step: int, path: str) -> None:
        self._line("checkpoint", step, path, f"{time.time():.6f}")

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


# ----------------------------------------------------------------------------- the supervisor


@dataclass
class Recovery:
    """One failure and the relaunch after it."""

    attempt: int
    failure: str                    # what failed: exit code, signal, the job's last error line
    exit_code: int
    failed_at_step: int | None      # steps completed when it failed (from the progress file)
    checkpoint: str | None          # resumed from (None: from the start)
    checkpoint_step: int
    steps_lost: int | None
    rejected_checkpoints: list[tuple[str, str]] = field(default_factory=list)
    excluded_regions: list[str] = field(default_factory=list)
    seconds_to_resume: float | None = None   # failure seen -> first step completed again
    seconds_to_launch: float | None = None   # failure seen -> relaunched


def _failure_text(code: int, tail: list[str]) -> str:
    from hpccloud.comm.watchdog import STALL_EXIT_CODE

    if code == STALL_EXIT_CODE:
        kind = "stalled rank (watchdog, exit 75)"
    elif code < 0:
        kind = f"launcher killed by signal {-code}"
    else:
        kind = f"exit code {code}"
    # the most telling line first: the job's own error, then what the launcher saw
    for keys in (("hpccloud: error",), ("EXIT STRING", "KILLED BY SIGNAL"), ("error", "Abort")):
        hits = [ln.strip(" =\n") for ln in tail if any(k in ln for k in keys)]
        if hits:
            return f"{kind}: {hits[0][:400]}"
    return kind


class _Tee:
    """Copies a child's stream to ours and keeps the last lines."""

    def __init__(self, src, dst, keep: int = 40):
        self.lines: list[str] = []
        self.keep = keep
        self.thread = threading.Thread(target=self._run, args=(src, dst), daemon=True)
        self.thread.start()

    def _run(self, src, dst) -> None:
        for line in iter(src.readline, ""):
            dst.write(line)
            dst.flush()
            self.lines.append(line)
            del self.lines[:-self.keep]


def _launch(cmd: list[str], env: dict[str, str]):
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    return proc, _Tee(proc.stdout, sys.stdout), _Tee(proc.stderr, sys.stderr)


def supervise(cmd: Sequence[str], *, max_restarts: int = 3, checkpoint_dir: str | None = None,
              key: bytes | None = None, exclude_regions: Sequence[str] = (),
              ranks_after_exclude: int | None = None, report_json: str | None = None,
              timeout_s: float | None = None, log=print) -> tuple[int, list[Recovery]]:
    """Run ``cmd`` and relaunch it from its newest verified checkpoint after each failure.

    Returns ``(exit code of the last attempt, recoveries)``. ``exclude_regions``
    are dropped from the first relaunch on (``ranks_after_exclude``: the
    launcher's new rank count). ``timeout_s`` bounds the whole supervision (the
    job's group is killed on expiry, exit 124).
    """
    from hpccloud.io.checkpoint import checkpoint_name, newest_verified

    cmd = list(cmd)
    ckpt_dir = checkpoint_dir or command_value(cmd, "--checkpoint-dir")
    if not ckpt_dir:
        raise InvalidArgument("supervise: the command has no --checkpoint-dir, so there is nothing to "
                              "restart from. Fix: add --checkpoint-every N --checkpoint-dir DIR to "
                              "the run command (or give supervise --checkpoint-dir)")
    report_json = report_json or command_value(cmd, "--json")
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    recoveries: list[Recovery] = []
    work = tempfile.mkdtemp(prefix="hpccloud-supervise-")
    try:
        attempt, current = 0, cmd
        stepped = False
        pending: Recovery | None = None
        pending_t = 0.0
        while True:
            progress_path = os.path.join(work, f"progress-{attempt}.tsv")
            env = {**os.environ, PROGRESS_ENV: progress_path}
            launched = time.time()
            proc, out_tee, err_tee = _launch(current, env)
            if pending is not None:
                pending.seconds_to_launch = launched - pending_t
            code = None
            try:
                while code is None:
                    code = proc.poll()
                    if pending is not None and pending.seconds_to_resume is None:
                        t = read_progress(progress_path)["first_step_t"]
                        if t is not None:
                            pending.seconds_to_resume = t - pending_t
                    if deadline is not None and time.monotonic() > deadline:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                        log("hpccloud supervise: timeout; the job was killed")
                        return 124, recoveries
                    if code is None:
                        time.sleep(0.02)
            except BaseException:  # interrupted: take the job down with us
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
            failed_t = time.time()
            out_tee.thread.join(5)
            err_tee.thread.join(5)
            with _suppress():
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers of a launcher that left them behind
            prog = read_progress(progress_path)
            if pending is not None:
                if pending.seconds_to_resume is None and prog["first_step_t"] is not None:
                    pending.seconds_to_resume = prog["first_step_t"] - pending_t
                recoveries.append(pending)
                pending = None
            # an attempt that stepped had claimed --output for this job: what it left there is
            # this job's own (a rank killed while the results were written left half of them,
            # and the relaunch refused them as another run's: exit 2, never retried)
            stepped = stepped or prog["first_step_t"] is not None
            if code == 0:
                break
            if code in NO_RETRY or attempt >= max_restarts:
                log(f"hpccloud supervise: the job failed with exit code {code}; "
                    + ("bad input is not retried" if code in NO_RETRY else
                       f"no restarts left (--max-restarts {max_restarts})"))
                _record(report_json, recoveries)
                return code, recoveries
            _remove_partial(ckpt_dir)
            path, rejected = newest_verified(ckpt_dir, key)
            step = int(os.path.basename(path).split("-")[1]) if path else 0
            done = prog["last_step"]
            attempt += 1
            pending = Recovery(attempt=attempt, failure=_failure_text(code, err_tee.lines + out_tee.lines),
                               exit_code=code, failed_at_step=done, checkpoint=path, checkpoint_step=step,
                               steps_lost=None if done is None else max(0, done - step),
                               rejected_checkpoints=rejected)
            pending_t = failed_t
            if stepped and "--overwrite" not in current:
                current = [*current, "--overwrite"]
            if path is not None:
                current = with_flag(current, "--restart", path)
            else:  # nothing verified yet: from the start (drop an old --restart)
                i, _ = _flag_value(current, ["--restart"])
                if i >= 0:
                    del current[i:i + (2 if current[i] == "--restart" else 1)]
            if exclude_regions and attempt == 1:
                for name in exclude_regions:
                    current = [*current, "--exclude-region", name]
                if ranks_after_exclude is not None:
                    current = with_ranks(current, ranks_after_exclude)
                pending.excluded_regions = list(exclude_regions)
            log(f"hpccloud supervise: attempt {attempt} failed ({pending.failure}); relaunching from "
                f"{checkpoint_name(step) if path else 'the start'} (steps lost: {pending.steps_lost})")
        _record(report_json, recoveries)
        for r in recoveries:
            log(f"hpccloud supervise: recovery {r.attempt}: {r.failure}; resumed from step "
                f"{r.checkpoint_step}, {r.steps_lost} steps lost, stepping again "
                f"{'?' if r.seconds_to_resume is None else f'{r.seconds_to_resume:.2f}'} s after the failure")
        return 0, recoveries
    finally:  # the progress files are the supervisor's own: nothing else reads them
        shutil.rmtree(work, ignore_errors=True)


def _remove_partial(root: str) -> list[str]:
    """Remove the temp folders of checkpoints the dead job never published (it is gone, so
    no writer is active); return their names."""
    import re
    import shutil

    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    gone = [n for n in names if re.fullmatch(r"\.step-\d{8}\.[0-9a-f]+\.tmp", n)]
    for n in gone:
        shutil.rmtree(os.path.join(root, n), ignore_errors=True)
    return gone


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], ProcessLookupError | PermissionError)


def _record(report_json: str | None, recoveries: list[Recovery]) -> None:
    """Add the recoveries to the run's JSON report (atomically), if there is one."""
    if not report_json or not os.path.exists(report_json):
        return
    import json

    from hpccloud.io.atomic import write_bytes_atomic

    try:
        with open(report_json, encoding="utf-8") as fh:
            rep = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{report_json}: cannot read the run report to add the recoveries "
                          f"({exc}). Fix: check the --json path") from None
    rep["recoveries"] = [asdict(r) for r in recoveries]
    write_bytes_atomic(report_json, (json.dumps(rep, indent=1) + "\n").encode())


__all__ = ["PROGRESS_ENV", "ProgressWriter", "Recovery", "command_value", "launcher_ranks",
           "read_progress", "supervise", "with_flag", "with_ranks"]
