"""Checkpoints under real mpiexec: round trip, atomic publish, corruption refused everywhere."""

import os

import h5py
import numpy as np
import pytest

from hpccloud.errors import ChecksumError, ConfigError
from hpccloud.io.checkpoint import read_checkpoint, write_checkpoint


def _local(rank, size):
    rng = np.random.default_rng(rank)
    return {sid: rng.standard_normal((5, 7)) for sid in range(rank, 3 * size, size)}


@pytest.mark.hpccloud_mpi(ranks=[1, 2, 3], timeout=120)
def test_round_trip_and_refuse_corruption(comm, tmp_path_factory):
    rank, size = comm.Get_rank(), comm.Get_size()
    folder = comm.bcast(str(tmp_path_factory.mktemp("ckpt")) if rank == 0 else None)
    local = _local(rank, size)
    path = write_checkpoint(comm, folder, 12, {"kind": "test"}, local, {"rng": [1, 2, 3]})
    assert os.path.basename(path) == "step-00000012"
    # nothing half-written is left beside it
    assert sorted(os.listdir(folder)) == ["step-00000012"]
    manifest, back = read_checkpoint(comm, path)
    assert manifest["step"] == 12 and manifest["state"] == {"rng": [1, 2, 3]}
    assert sorted(back) == sorted(local)
    for sid, arr in local.items():
        np.testing.assert_array_equal(back[sid], arr)

    # flip one value in the last rank's file: every rank refuses the checkpoint
    comm.Barrier()
    if rank == 0:
        victim = os.path.join(path, f"rank-{size - 1:05d}.h5")
        with h5py.File(victim, "r+") as f:
            name = sorted(f["shards"].keys())[0]
            del f["shards"][name]
            f["shards"].create_dataset(name, data=np.zeros((5, 7)))
    comm.Barrier()
    with pytest.raises(ChecksumError) as info:
        read_checkpoint(comm, path)
    messages = comm.allgather(str(info.value))
    assert len(set(messages)) == 1 and "fails its checksum" in messages[0]


@pytest.mark.hpccloud_mpi(ranks=[2], timeout=60)
def test_incomplete_or_foreign_checkpoint(comm, tmp_path_factory):
    folder = comm.bcast(str(tmp_path_factory.mktemp("bad")) if comm.Get_rank() == 0 else None)
    with pytest.raises(ConfigError, match="not a checkpoint folder"):
        read_checkpoint(comm, os.path.join(folder, "nope"))
    if comm.Get_rank() == 0:
        os.makedirs(os.path.join(folder, "step-00000001"))
    comm.Barrier()
    with pytest.raises(ConfigError, match="incomplete"):
        read_checkpoint(comm, os.path.join(folder, "step-00000001"))
    path = write_checkpoint(comm, folder, 2, {}, {comm.Get_rank(): np.ones(3)}, {})
    sub = comm.Split(comm.Get_rank(), 0)  # a 1-rank job reading a 2-rank checkpoint
    with pytest.raises(ConfigError, match="written by 2 ranks"):
        read_checkpoint(sub, path)
    sub.Free()
