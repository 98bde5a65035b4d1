"""Checkpoint manifests: own digest, keyed MAC, missing keys, region-aware backups, by-shard reads."""

import json
import os

import numpy as np
import pytest

from hpccloud.comm.topology import load_topology
from hpccloud.errors import ChecksumError, ConfigError, InvalidArgument
from hpccloud.io.checkpoint import (
    MANIFEST,
    backup_allowed,
    list_checkpoints,
    newest_verified,
    parse_backup_dirs,
    read_checkpoint,
    read_checkpoint_shards,
    read_manifest,
    state_may_live,
    verify_checkpoint,
    write_checkpoint,
)
from hpccloud.policy import Policy
from hpccloud.shards import tile_2d
from hpccloud.topology import read_topology_text, topology_from_text

KEY = bytes(range(32))


def _policy(size=2):
    return Policy.from_topology(topology_from_text(*read_topology_text(None), size=size))


def _map(size):
    # left column eu-personal, the rest public; 3 x 3 tiles
    return tile_2d((6, 6), (3, 3), "<f8", size,
                   data_class=lambda sid, idx: "eu-personal" if sid % 3 == 0 else "public")


def _write_one_rank(folder, step=5, key=None):
    from mpi4py import MPI

    m = _map(1)
    local = {s.id: np.full(s.shape, float(s.id)) for s in m.shards}
    return write_checkpoint(MPI.COMM_SELF, folder, step, m.to_json(), local, {"workload": "t"}, key=key)


def _edit(path, fn):
    mpath = os.path.join(path, MANIFEST)
    with open(mpath) as fh:
        doc = json.load(fh)
    fn(doc)
    with open(mpath, "w") as fh:
        json.dump(doc, fh)


def test_edited_step_is_refused(tmp_path):
    path = _write_one_rank(str(tmp_path))
    assert read_manifest(path)["step"] == 5
    _edit(path, lambda d: d.__setitem__("step", 6))
    with pytest.raises(ChecksumError, match="does not match its sha256"):
        read_manifest(path)
    assert newest_verified(str(tmp_path))[0] is None


def test_keyed_mac(tmp_path):
    path = _write_one_rank(str(tmp_path), key=KEY)
    assert verify_checkpoint(path, KEY)["signed"]
    with pytest.raises(ConfigError, match="signed with a key"):
        read_manifest(path)
    with pytest.raises(ChecksumError, match="HMAC does not match"):
        read_manifest(path, bytes(32))

    # an attacker who edits the step and recomputes the plain sha256 is still caught by the MAC
    import hashlib

    from hpccloud.io.checkpoint import _canonical

    def forge(d):
        d["step"] = 1
        body = {k: v for k, v in d.items() if k != "integrity"}
        d["integrity"]["sha256"] = hashlib.sha256(_canonical(body)).hexdigest()

    _edit(path, forge)
    with pytest.raises(ChecksumError, match="HMAC"):
        read_manifest(path, KEY)
    # an unsigned manifest is refused when a key is given
    unsigned = _write_one_rank(str(tmp_path), step=7)
    with pytest.raises(ChecksumError, match="not signed"):
        read_manifest(unsigned, KEY)


def test_missing_keys_one_message(tmp_path):
    path = _write_one_rank(str(tmp_path))
    _edit(path, lambda d: (d.pop("shard_rank"), d.pop("state"), d.__setitem__("ranks", "2")))
    with pytest.raises(ConfigError) as info:
        read_manifest(path)
    msg = str(info.value)
    assert MANIFEST in msg and "['shard_rank', 'state']" in msg and "ranks (expected int" in msg


def test_verify_list_and_newest(tmp_path):
    first = _write_one_rank(str(tmp_path), step=5)
    second = _write_one_rank(str(tmp_path), step=10)
    assert [s for s, _ in list_checkpoints(str(tmp_path))] == [5, 10]
    summary = verify_checkpoint(second)
    assert summary["shards"] == summary["shards_verified"] == 9
    assert summary["classes"] == {"eu-personal": 3, "public": 6}
    # flip a shard of the newest: it fails its checksum, the older one is chosen
    import h5py

    with h5py.File(os.path.join(second, "rank-00000.h5"), "r+") as f:
        del f["shards"]["4"]
        f["shards"].create_dataset("4", data=np.zeros((2, 2)))
    newest, rejected = newest_verified(str(tmp_path))
    assert newest == first and "fails its checksum" in rejected[0][1]
    assert newest_verified(str(tmp_path), full=False)[0] == second


def test_read_shards_from_any_rank_file(tmp_path):
    path = _write_one_rank(str(tmp_path))
    manifest = read_manifest(path)
    got = read_checkpoint_shards(path, manifest, [8, 0, 4])
    assert sorted(got) == [0, 4, 8] and float(got[4][0, 0]) == 4.0


def test_backup_rules_and_parsing():
    p = _policy()
    assert backup_allowed(p, "eu-north", ["eu-personal", "public"])
    assert not backup_allowed(p, "us-east", ["eu-personal"])
    # an effective halo class is made of declared classes: the intersection decides
    assert not backup_allowed(p, "us-east", ["eu-personal+public"])
    assert backup_allowed(p, "us-east", ["public"])
    assert state_may_live(p, "us-east", ["eu-personal", "public"])  # aggregates may leave
    assert parse_backup_dirs(["us-east=/b"], ["eu-north", "us-east"]) == [("us-east", "/b")]
    with pytest.raises(InvalidArgument, match="unknown region 'mars'"):
        parse_backup_dirs(["mars=/b"], ["eu-north", "us-east"])
    with pytest.raises(InvalidArgument, match="expected REGION=PATH"):
        parse_backup_dirs(["/b"], ["eu-north"])


@pytest.mark.hpccloud_mpi(ranks=[2, 3], timeout=120)
def test_backups_hold_only_what_their_region_allows(comm, tmp_path_factory):
    rank, size = comm.Get_rank(), comm.Get_size()
    root = comm.bcast(str(tmp_path_factory.mktemp("bk")) if rank == 0 else None)
    topo = load_topology(None, comm)
    policy = Policy.from_topology(topo)
    m = _map(size)
    # place eu tiles on eu ranks (rank 0 is eu-north for every size >= 1)
    owners = np.array([0 if s.data_class == "eu-personal" else s.owner_rank for s in m.shards])
    m = m.with_owners(owners)
    local = {s.id: np.full(s.shape, float(s.id)) for s in m.shards_on(rank)}
    backups = [("eu-north", os.path.join(root, "eu")), ("us-east", os.path.join(root, "us"))]
    path = write_checkpoint(comm, os.path.join(root, "main"), 4, m.to_json(), local,
                            {"workload": "t"}, key=KEY, backups=backups, policy=policy)
    manifest, back = read_checkpoint(comm, path, KEY)
    assert sorted(back) == sorted(local)
    if rank == 0:
        eu = verify_checkpoint(os.path.join(root, "eu", "step-00000004"), KEY)
        assert eu["shards_verified"] == 9 and eu["backup"]["region"] == "eu-north"
        us = verify_checkpoint(os.path.join(root, "us", "step-00000004"), KEY)
        # rank 0's file holds EU tiles: never copied to us-east
        assert "rank-00000.h5" not in us["backup"]["files_held"]
        assert not os.path.exists(os.path.join(root, "us", "step-00000004", "rank-00000.h5"))
        held = set(us["backup"]["files_held"])
        want = {f"rank-{r:05d}.h5" for r in range(1, size)}
        assert held == want and us["shards_verified"] == sum(1 for s in m.shards if s.owner_rank > 0)
    comm.Barrier()


# ----------------------------------------------------------------------------- consistency


def _reseal(path, fn):
    """Edit the manifest and recompute its sha256, as a careful forger would."""
    from hpccloud.io.checkpoint import seal_manifest

    _edit(path, lambda d: (fn(d), d.update(seal_manifest(d))))


def _shard(d, sid):
    return d["shard_map"]["shards"][sid]


RESEALED = [
    ("absolute file", lambda d: d["files"].__setitem__(0, "/etc/passwd"),
     "files[0] is '/etc/passwd', not the name of a file in the checkpoint's own folder"),
    ("dotdot file", lambda d: d["files"].__setitem__(0, "../rank-00000.h5"),
     "files[0] is '../rank-00000.h5', not the name of a file"),
    ("map dtype", lambda d: d["shard_map"].__setitem__("dtype", "<f4"),
     "shard_map.shards[0].dtype is '<f8', the map's dtype is '<f4'"),
    ("nbytes", lambda d: _shard(d, 4).__setitem__("shape", [3, 2]),
     "shard_map.shards[4]: shape [3, 2] and nbytes 32 do not fit together (8-byte items)"),
    ("index outside", lambda d: _shard(d, 8).__setitem__("index", [[4, 6], [4, 8]]),
     "shard_map.shards[8].index [[4, 6], [4, 8]] is not inside shard_map.global_shape [6, 6]"),
    ("owner", lambda d: _shard(d, 2).__setitem__("owner_rank", 3),
     "shard_map.shards[2].owner_rank 3 is not one of the 1 ranks that wrote it"),
    ("neighbour", lambda d: _shard(d, 1).__setitem__("neighbours", [0, 9]),
     "shard_map.shards[1].neighbours [0, 9] names shards the map does not have (ids 0..8)"),
    ("not a map", lambda d: d["shard_map"].pop("grid"),
     "shard_map: not a valid ShardMap JSON document (KeyError: 'grid'). The manifest is not"),
]


@pytest.mark.parametrize("case,edit,message", RESEALED, ids=[c[0] for c in RESEALED])
def test_resealed_inconsistent_manifest_refused(tmp_path, case, edit, message):
    path = _write_one_rank(str(tmp_path))
    _reseal(path, edit)
    for call in (lambda: read_manifest(path), lambda: verify_checkpoint(path)):
        with pytest.raises(ConfigError) as info:
            call()
        msg = str(info.value)
        assert msg.startswith(os.path.join(path, MANIFEST) + ": " + message), msg
        assert "edited and re-sealed" in msg and msg.endswith("Fix: restart from another checkpoint")


def test_stored_dataset_must_match_the_map(tmp_path):
    # shape and nbytes edited together (the map is self-consistent), the data is not that shape
    path = _write_one_rank(str(tmp_path))
    _reseal(path, lambda d: _shard(d, 4).update(shape=[4, 1]))
    with pytest.raises(ConfigError) as info:
        verify_checkpoint(path)
    assert str(info.value).startswith(
        f"{path}/{MANIFEST}: shard_map.shards[4] is [4, 1] of <f8, but {path}/rank-00000.h5 "
        "stores it as [2, 2] of <f8.")


def test_workload_map_checked_key_by_key(tmp_path):
    from hpccloud.io.checkpoint import check_workload_map

    path = _write_one_rank(str(tmp_path))
    declared = _map(1)
    check_workload_map(read_manifest(path), declared, "m.json", "t")  # as written: fine
    cases = [(lambda d: d["shard_map"].__setitem__("global_shape", [12, 12]),
              "shard_map.global_shape is [12, 12], but workload 't' with the checkpoint's params "
              "makes [6, 6]"),
             (lambda d: [s.update(dtype="<f4", nbytes=16) for s in d["shard_map"]["shards"]]
              and d["shard_map"].__setitem__("dtype", "<f4"),
              "shard_map.dtype is '<f4', but workload 't' with the checkpoint's params makes '<f8'"),
             (lambda d: _shard(d, 4).update(shape=[4, 1]),
              "shard_map.shards[4].shape is [4, 1], but workload 't' with the checkpoint's params "
              "makes [2, 2]"),
             (lambda d: d["shard_map"].__setitem__("grid", [9, 1]), "shard_map.grid is [9, 1]")]
    for edit, message in cases:
        doc = read_manifest(path)
        edit(doc)
        with pytest.raises(ConfigError) as info:
            check_workload_map(doc, declared, "m.json", "t")
        assert str(info.value).startswith("m.json: " + message), str(info.value)
        assert str(info.value).endswith("Fix: restart from another checkpoint")
    # a workload whose shards grow and shrink: only the extents after the first are fixed
    doc = read_manifest(path)
    _shard(doc, 4).update(shape=[7, 2])
    check_workload_map(doc, declared, "m.json", "t", fixed_shapes=False)
    _shard(doc, 4).update(shape=[7, 3])
    with pytest.raises(ConfigError, match=r"shards\[4\].shape is \[7, 3\], .* makes \[any, 2\]"):
        check_workload_map(doc, declared, "m.json", "t", fixed_shapes=False)


def test_rank_file_linked_outside_the_folder_refused(tmp_path):
    path = _write_one_rank(str(tmp_path / "ck"))
    outside = tmp_path / "elsewhere.h5"
    os.replace(os.path.join(path, "rank-00000.h5"), outside)
    os.symlink(outside, os.path.join(path, "rank-00000.h5"))
    with pytest.raises(ConfigError) as info:
        verify_checkpoint(path)
    assert str(info.value) == (
        f"{path}/{MANIFEST}: files[0]: {path}/rank-00000.h5 is a symbolic link to {outside}, "
        "outside the checkpoint folder; a checkpoint reads only its own files. Fix: copy the "
        "file into the folder, or restart from another checkpoint")
    # a link inside the folder is fine
    os.unlink(os.path.join(path, "rank-00000.h5"))
    os.replace(outside, os.path.join(path, "data.h5"))
    os.symlink("data.h5", os.path.join(path, "rank-00000.h5"))
    assert verify_checkpoint(path)["shards_verified"] == 9
    # a link loop
    os.unlink(os.path.join(path, "rank-00000.h5"))
    os.symlink("rank-00000.h5", os.path.join(path, "rank-00000.h5"))
    with pytest.raises(ConfigError, match=r"files\[0\]: .*rank-00000.h5 is a symbolic link loop"):
        verify_checkpoint(path)


# ----------------------------------------------------------------------------- wrong paths


def test_not_a_folder_named_in_words(tmp_path):
    afile = tmp_path / "f"
    afile.write_text("x")
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    for path, why in ((afile, "it is a file, not a folder"), (loop, "it is a symbolic link loop"),
                      (tmp_path / "none", "it does not exist")):
        with pytest.raises(ConfigError) as info:
            read_manifest(str(path))
        assert str(info.value).startswith(f"{path}: not a checkpoint folder: {why}. Fix:")
    assert list_checkpoints(str(afile)) == []
    with pytest.raises(ConfigError, match="cannot list the folder: it is a symbolic link loop"):
        list_checkpoints(str(loop))


def test_folder_of_checkpoints_names_the_newest_complete(tmp_path):
    _write_one_rank(str(tmp_path), step=5)
    second = _write_one_rank(str(tmp_path), step=10)
    os.makedirs(tmp_path / "step-00000020")  # no manifest: not complete
    with pytest.raises(ConfigError) as info:
        read_manifest(str(tmp_path), flag="--restart")
    assert str(info.value) == (f"{tmp_path}: a folder of checkpoints, not one checkpoint. Fix: "
                               f"pass --restart {second} (the newest complete one)")
    _edit(second, lambda d: d.__setitem__("step", 11))  # no longer verifies
    with pytest.raises(ConfigError, match=r"Fix: pass .*step-00000005 \(the newest complete one\)"):
        read_manifest(str(tmp_path))
