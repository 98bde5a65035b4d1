"""Recovery figures: time from a rank's death to stepping again, steps lost, checkpoint cost.

    python benchmarks/recovery.py --ranks 4 --json out/recovery.json

1. ``recovery``: ``hpccloud supervise -- mpiexec -n R hpccloud run`` (the default
   stencil2d) with ``--checkpoint-every K``; one rank SIGKILLs itself at a step
   (``HPCCLOUD_TEST_FAULT``). The supervisor's record gives the seconds from the
   failure (the launcher's exit, < 0.1 s after the death) to the first step
   completed again, and the steps lost.
2. ``checkpoint cost``: the same run without checkpoints, with checkpoints written
   while the next steps run (default), and with checkpoints published before the
   next step (``HPCCLOUD_SYNC_CHECKPOINTS=1``), interleaved ``--rounds`` times.
   The figure is the loop's seconds spent on each checkpoint (start + finish,
   from the report) over ``K`` x the median step time of the same run, and the
   whole-loop time against the run without checkpoints in the same round.

Timings on a shared machine are noisy: medians over rounds, ratios within a round.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

from hpccloud.testing.mpi_pytest import child_env, mpiexec_path, run_group


def _run(args: list[str], ranks: int, env: dict[str, str], timeout_s: float = 300):
    argv = [mpiexec_path(), "-n", str(ranks), sys.executable, "-m", "hpccloud", "run", *args]
    res = run_group(argv, timeout_s, env=child_env(ranks, env))
    if res.returncode != 0:
        raise SystemExit(f"run failed ({res.returncode}):\n{res.stderr[-3000:]}")


def checkpoint_cost(ranks: int, steps: int, every: int, rounds: int, work: str) -> dict:
    rows = []
    for i in range(rounds):
        row = {}
        for mode in ("none", "async", "sync"):
            rep_path = os.path.join(work, f"cost-{mode}-{i}.json")
            args = ["--steps", str(steps), "--quiet", "--json", rep_path]
            if mode != "none":
                args += ["--checkpoint-every", str(every), "--checkpoint-dir",
                         os.path.join(work, f"ck-{mode}-{i}")]
            _run(args, ranks, {"HPCCLOUD_SYNC_CHECKPOINTS": "1" if mode == "sync" else "0"})
            with open(rep_path) as fh:
                rep = json.load(fh)
            step_s = float(np.median([s["step_s"] for s in rep["steps"]]))
            ck = rep.get("checkpoints", [])
            # the checkpoints in the run's middle: the last one has no next steps to hide behind
            mid = [c["start_s"] + c.get("finish_s", 0.0) for c in ck if c["step"] < steps]
            row[mode] = {"total_s": rep["total_s"], "step_median_s": step_s,
                         "checkpoint_loop_s": mid,
                         "last_checkpoint_s": (ck[-1]["start_s"] + ck[-1].get("close_s", 0.0)
                                               if ck else None),
                         "fraction_of_k_steps": (float(np.median(mid)) / (every * step_s)
                                                 if mid else None)}
        for mode in ("async", "sync"):
            row[mode]["loop_vs_no_checkpoints"] = row[mode]["total_s"] / row["none"]["total_s"]
        rows.append(row)
        print(f"round {i}: " + ", ".join(
            f"{m}: total {row[m]['total_s']:.2f} s, step {row[m]['step_median_s'] * 1e3:.1f} ms"
            + (f", checkpoint {np.median(row[m]['checkpoint_loop_s']) * 1e3:.1f} ms = "
               f"{row[m]['fraction_of_k_steps']:.3f} of {every} steps" if m != "none" else "")
            for m in ("none", "async", "sync")), flush=True)
    summary = {m: {"fraction_of_k_steps_median": float(np.median([r[m]["fraction_of_k_steps"]
                                                                  for r in rows])),
                   "loop_vs_no_checkpoints_median": float(np.median([r[m]["loop_vs_no_checkpoints"]
                                                                     for r in rows]))}
               for m in ("async", "sync")}
    return {"rounds": rows, "summary": summary}


def recovery(ranks: int, steps: int, every: int, kill_rank: int, kill_step: int, work: str) -> dict:
    rep_path = os.path.join(work, "recovery.json")
    marker = os.path.join(work, "fault")
    argv = [sys.executable, "-m", "hpccloud", "supervise", "--timeout", "600", "--",
            mpiexec_path(), "-n", str(ranks), sys.executable, "-m", "hpccloud", "run",
            "--steps", str(steps), "--quiet", "--json", rep_path, "--checkpoint-every", str(every),
            "--checkpoint-dir", os.path.join(work, "ck-recovery")]
    res = run_group(argv, 700, env=child_env(ranks, {
        "HPCCLOUD_TEST_FAULT": f"kill:{kill_rank}:{kill_step}:{marker}"}))
    if res.returncode != 0:
        raise SystemExit(f"supervised run failed ({res.returncode}):\n{res.stderr[-3000:]}")
    with open(rep_path) as fh:
        rec = json.load(fh)["recoveries"]
    print(f"recovery: {rec[0]['failure'][:80]}; resumed from step {rec[0]['checkpoint_step']}, "
          f"{rec[0]['steps_lost']} steps lost, relaunched after {rec[0]['seconds_to_launch']:.2f} s, "
          f"stepping again {rec[0]['seconds_to_resume']:.2f} s after the failure", flush=True)
    return {"recoveries": rec}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--every", type=int, default=10, help="--checkpoint-every")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--kill-rank", type=int, default=2)
    ap.add_argument("--kill-step", type=int, default=25)
    ap.add_argument("--skip-cost", action="store_true")
    ap.add_argument("--skip-recovery", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    out = {"ranks": args.ranks, "steps": args.steps, "checkpoint_every": args.every}
    with tempfile.TemporaryDirectory(prefix="hpccloud-recovery-") as work:
        if not args.skip_recovery:
            out["recovery"] = recovery(args.ranks, args.steps, args.every, args.kill_rank,
                                       args.kill_step, work)
        if not args.skip_cost:
            out["checkpoint_cost"] = cost = checkpoint_cost(args.ranks, args.steps, args.every,
                                                            args.rounds, work)
            for m, s in cost["summary"].items():
                print(f"{m}: checkpoint = {s['fraction_of_k_steps_median']:.3f} of {args.every} "
                      f"steps (median), loop {s['loop_vs_no_checkpoints_median']:.2f}x the run "
                      "without checkpoints")
    if args.json:
        from hpccloud.io.atomic import write_json_atomic

        write_json_atomic(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
