"""Restart through the real CLI: 2 -> 4 ranks, refusals with one message, verify/list, backups."""

import json
import os
import subprocess
import sys

import pytest
from recovery_helpers import STEPS, assert_same_result, hpccloud_run

from hpccloud.io.checkpoint import MANIFEST, verify_checkpoint

KEY_HEX = "11" * 32


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory):
    """A 2-rank run with checkpoints every 4 steps, signed, backed up per region."""
    folder = str(tmp_path_factory.mktemp("ckpt-run"))
    key = os.path.join(folder, "key.hex")
    with open(key, "w") as fh:
        fh.write(KEY_HEX)
    os.chmod(key, 0o600)
    res = hpccloud_run(["--checkpoint-every", "4", "--checkpoint-dir", f"{folder}/ckpt",
                        "--key-file", key, "--backup-dir", f"us-east={folder}/bk-us",
                        "--backup-dir", f"eu-north={folder}/bk-eu"], 2, folder, "first")
    assert res.returncode == 0, res.stderr[-3000:]
    return folder, key


def _cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "hpccloud", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_checkpointed_run_equals_reference(checkpointed, reference):
    folder, _ = checkpointed
    assert_same_result(folder, "first", reference)


def test_restart_2_to_4_ranks_bit_for_bit(checkpointed, reference, tmp_path):
    folder, key = checkpointed
    res = hpccloud_run(["--restart", f"{folder}/ckpt/step-00000004", "--key-file", key], 4,
                       str(tmp_path), "r24", env={"HPCCLOUD_CHECK_RESIDENCY_EVERY_STEP": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    rep = assert_same_result(str(tmp_path), "r24", reference)
    assert rep["restarted_from"]["ranks_before"] == 2 and rep["ranks"] == 4
    assert [s["step"] for s in rep["steps"]] == list(range(4, STEPS))


def test_backups_hold_only_what_their_region_allows(checkpointed):
    folder, key = checkpointed
    from hpccloud.keys import load_key

    k = load_key(key)
    eu = verify_checkpoint(f"{folder}/bk-eu/step-00000008", k)
    assert eu["shards_verified"] == eu["shards"]  # eu-north may hold every class
    us = verify_checkpoint(f"{folder}/bk-us/step-00000008", k)
    # rank 0 (eu-north) holds the EU tiles: its file never reaches us-east
    assert "rank-00000.h5" not in us["backup"]["files_held"]
    assert not os.path.exists(f"{folder}/bk-us/step-00000008/rank-00000.h5")


def test_steps_at_or_below_the_checkpoint_refused(checkpointed, tmp_path):
    folder, key = checkpointed
    res = hpccloud_run(["--restart", f"{folder}/ckpt/step-00000008", "--key-file", key], 2,
                       str(tmp_path), "short", steps=8)
    assert res.returncode == 2, res.stderr[-3000:]
    assert res.stderr.count("hpccloud: error:") == 1 and "Traceback" not in res.stderr
    assert "nothing is left to run" in res.stderr and "--steps greater than 8" in res.stderr


def _copy_checkpoint(src, dst, edit):
    import shutil

    shutil.copytree(src, dst)
    with open(os.path.join(dst, MANIFEST)) as fh:
        doc = json.load(fh)
    edit(doc)
    with open(os.path.join(dst, MANIFEST), "w") as fh:
        json.dump(doc, fh)
    return dst


@pytest.mark.parametrize("case", ["edited-step", "missing-keys", "no-key"])
def test_damaged_manifest_one_message_every_rank_stops(checkpointed, tmp_path, case):
    folder, key = checkpointed
    edits = {"edited-step": lambda d: d.__setitem__("step", 5),
             "missing-keys": lambda d: (d.pop("shard_rank"), d.pop("state")),
             "no-key": lambda d: None}
    ck = _copy_checkpoint(f"{folder}/ckpt/step-00000004", str(tmp_path / "step-00000004"), edits[case])
    args = ["--restart", ck] + ([] if case == "no-key" else ["--key-file", key])
    res = hpccloud_run(args, 2, str(tmp_path), "bad")
    assert res.returncode in (1, 2), res.stderr[-3000:]
    assert res.stderr.count("hpccloud: error:") == 1 and "Traceback" not in res.stderr, res.stderr
    want = {"edited-step": "does not match its sha256", "missing-keys": "['shard_rank', 'state']",
            "no-key": "signed with a key"}[case]
    assert want in res.stderr


def test_checkpoint_list_and_verify_cli(checkpointed):
    folder, key = checkpointed
    res = _cli("checkpoint", "list", f"{folder}/ckpt", "--key-file", key)
    assert res.returncode == 0, res.stderr
    assert "3 of 3 checkpoints verify" in res.stdout
    res = _cli("checkpoint", "verify", f"{folder}/ckpt", "--key-file", key, "--ranks", "3")
    assert res.returncode == 0, res.stderr
    assert "step 12, written by 2 ranks" in res.stdout and "restart on 3 ranks" in res.stdout
    assert "rank   2 (us-east)" in res.stdout
    # without eu-north, the EU class could live nowhere: the restart's own refusal, exit 2
    res = _cli("checkpoint", "verify", f"{folder}/ckpt/step-00000004", "--key-file", key,
               "--ranks", "2", "--exclude-region", "eu-north")
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.count("hpccloud: error:") == 1
    assert "'eu-personal' may live only in ['eu-north']" in res.stderr
    assert "ranks only in ['us-east']" in res.stderr
    # a rank count out of range is refused before the checkpoint is read (10^8 ran out of memory)
    for bad in ("100000000", "-3", "0"):
        res = _cli("checkpoint", "verify", f"{folder}/ckpt", "--key-file", key, "--ranks", bad)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
        assert f"--ranks {bad}: must be between 1 and" in res.stderr and "Fix:" in res.stderr


def _reseal(doc):
    from hpccloud.io.checkpoint import seal_manifest

    doc.update(seal_manifest(doc, None))


def test_resealed_wrong_global_shape_refused_by_restart_and_verify(tmp_path):
    # unsigned, so a forger can recompute the sha256: the map must still fit the workload
    first = hpccloud_run(["--checkpoint-every", "4", "--checkpoint-dir", f"{tmp_path}/ckpt"], 2,
                         str(tmp_path), "unsigned", steps=6)
    assert first.returncode == 0, first.stderr[-3000:]
    ck = _copy_checkpoint(f"{tmp_path}/ckpt/step-00000004", str(tmp_path / "edited"),
                          lambda d: (d["shard_map"].__setitem__("global_shape", [192, 192]),
                                     _reseal(d)))
    want = (f"hpccloud: error: {ck}/{MANIFEST}: shard_map.global_shape is [192, 192], but "
            "workload 'stencil2d' with the checkpoint's params makes [96, 96]: the manifest does "
            "not describe its workload's data")
    res = hpccloud_run(["--restart", ck], 2, str(tmp_path), "bad")
    assert res.returncode == 2, res.stderr[-3000:]
    assert res.stderr.count("hpccloud: error:") == 1 and "Traceback" not in res.stderr
    assert want in res.stderr and "Fix: restart from another checkpoint" in res.stderr
    assert not os.path.exists(tmp_path / "bad") and not os.path.exists(tmp_path / "bad.json")
    res = _cli("checkpoint", "verify", ck)
    assert res.returncode == 2 and res.stderr.startswith(want), res.stdout + res.stderr
    assert "Traceback" not in res.stderr


def test_restart_from_the_checkpoint_root_names_the_step_folder(checkpointed, tmp_path):
    folder, key = checkpointed
    res = hpccloud_run(["--restart", f"{folder}/ckpt", "--key-file", key], 2, str(tmp_path), "root")
    assert res.returncode == 2, res.stderr[-3000:]
    assert res.stderr.count("hpccloud: error:") == 1 and "Traceback" not in res.stderr
    assert (f"{folder}/ckpt: a folder of checkpoints, not one checkpoint. Fix: pass --restart "
            f"{folder}/ckpt/step-00000012 (the newest complete one)") in res.stderr


def test_checkpoint_cli_on_a_file_or_a_link_loop(tmp_path):
    afile = tmp_path / "f.txt"
    afile.write_text("x")
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    for path, why in ((afile, "it is a file, not a folder"), (loop, "it is a symbolic link loop")):
        res = _cli("checkpoint", "verify", str(path))
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert res.stderr == (f"hpccloud: error: {path}: not a checkpoint folder: {why}. Fix: "
                              "pass a step-NNNNNNNN folder written by `hpccloud run "
                              "--checkpoint-every`\n")
        res = _cli("checkpoint", "list", str(path))
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert res.stderr == (f"hpccloud: error: {path}: not a folder of checkpoints: {why}. "
                              "Fix: pass the --checkpoint-dir of a run\n")
    # a checkpoint root whose newest step folder is a link loop: verify names it
    os.makedirs(tmp_path / "root")
    os.symlink(tmp_path / "root" / "step-00000009", tmp_path / "root" / "step-00000009")
    res = _cli("checkpoint", "verify", str(tmp_path / "root"))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "step-00000009: not a checkpoint folder: it is a symbolic link loop" in res.stderr
