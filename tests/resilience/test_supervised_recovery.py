"""Supervised recovery under real mpiexec: kill -9 and SIGSTOP of a rank, resumed from checkpoints.

Each run is the real CLI (``hpccloud supervise -- mpiexec -n 4 python -m hpccloud run``);
the fault comes from the rank itself at a step drawn at random (``HPCCLOUD_TEST_FAULT``),
once: the relaunch runs through. The result must equal the uninterrupted run bit
for bit, and the recovery must be in the report.
"""

import json
import os
import random

from recovery_helpers import STEPS, assert_same_result, supervised_run

from hpccloud.comm.watchdog import STALL_EXIT_CODE


def _recovery(folder, name):
    with open(os.path.join(folder, f"{name}.json")) as fh:
        rep = json.load(fh)
    assert len(rep["recoveries"]) == 1, rep.get("recoveries")
    return rep["recoveries"][0]


def _check_checkpoint(rec, step, every=3):
    """Resumed from a published checkpoint at or before the failure: checkpoints are written
    while the next steps run, so the newest ones may still be in flight. At ~5 ms a step a
    write (with its fsync) can outlast a whole interval on a loaded machine: in one CI run a
    kill at step 6 resumed from step 0, checkpoint 3 still being written (bit for bit all the
    same). Which checkpoint was published in time is the machine's business; that the result
    is the uninterrupted run's is checked by the caller."""
    newest = step // every * every
    assert rec["checkpoint_step"] % every == 0 and 0 <= rec["checkpoint_step"] <= newest, rec
    assert rec["steps_lost"] == step - rec["checkpoint_step"]
    if rec["checkpoint_step"]:
        assert rec["checkpoint"].endswith(f"step-{rec['checkpoint_step']:08d}")


def test_kill9_at_a_random_step_recovers_bit_for_bit(tmp_path, reference):
    folder = str(tmp_path)
    step = random.Random(os.getpid()).randrange(4, STEPS - 1)
    rank = random.Random(os.getpid() + 1).randrange(4)
    fault = f"kill:{rank}:{step}:{folder}/fault"
    res = supervised_run(["--checkpoint-every", "3", "--checkpoint-dir", f"{folder}/ckpt"], 4,
                         folder, "run", env={"HPCCLOUD_TEST_FAULT": fault,
                                             "HPCCLOUD_CHECK_RESIDENCY_EVERY_STEP": "1"})
    assert res.returncode == 0, f"fault {fault}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    assert os.path.exists(f"{folder}/fault"), "the fault never fired"
    assert_same_result(folder, "run", reference)
    rec = _recovery(folder, "run")
    assert rec["exit_code"] != 0 and rec["failed_at_step"] == step
    _check_checkpoint(rec, step)
    assert 0 < rec["seconds_to_resume"] < 120
    # the killed job's unpublished checkpoint files were cleaned up before the relaunch
    assert not [n for n in os.listdir(f"{folder}/ckpt") if n.startswith(".step-")]


def test_stopped_rank_is_detected_and_recovered(tmp_path, reference):
    folder = str(tmp_path)
    fault = f"stop:1:7:{folder}/fault"
    res = supervised_run(["--checkpoint-every", "3", "--checkpoint-dir", f"{folder}/ckpt",
                          "--stall-timeout", "8"], 4, folder, "run",
                         env={"HPCCLOUD_TEST_FAULT": fault})
    assert res.returncode == 0, f"{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    stalled = [ln for ln in res.stderr.splitlines() if "stalled:" in ln]
    assert len(stalled) == 1 and "rank 1 (host" in stalled[0] and "region eu-north" in stalled[0]
    assert_same_result(folder, "run", reference)
    rec = _recovery(folder, "run")
    assert rec["exit_code"] == STALL_EXIT_CODE and "stalled" in rec["failure"]
    assert rec["failed_at_step"] == 7
    _check_checkpoint(rec, 7)
    assert rec["seconds_to_resume"] > 0


def test_region_lost_relaunch_without_it(tmp_path, reference):
    """A us-east rank dies; the supervisor relaunches on what is left (eu-north, 2 ranks)."""
    folder = str(tmp_path)
    fault = f"kill:3:5:{folder}/fault"
    res = supervised_run(["--checkpoint-every", "3", "--checkpoint-dir", f"{folder}/ckpt"], 4,
                         folder, "run", sup_args=["--exclude-region", "us-east"],
                         env={"HPCCLOUD_TEST_FAULT": fault,
                              "HPCCLOUD_CHECK_RESIDENCY_EVERY_STEP": "1"})
    assert res.returncode == 0, f"{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    rep = assert_same_result(folder, "run", reference)
    assert rep["ranks"] == 2 and {r["region"] for r in rep["topology"]["ranks"]} == {"eu-north"}
    assert rep["restarted_from"]["ranks_before"] == 4
    rec = _recovery(folder, "run")
    assert rec["excluded_regions"] == ["us-east"] and rec["failed_at_step"] == 5
    _check_checkpoint(rec, 5)
    # nothing of this run was written in the lost region
    assert not os.path.exists(os.path.join(folder, "run", "us-east.h5"))
