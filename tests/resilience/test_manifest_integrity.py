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
