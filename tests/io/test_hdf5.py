"""HDF5 input hyperslabs, per-region files, the VDS catalogue, and refusal of corrupted files."""

import h5py
import numpy as np
import pytest

from hpccloud.errors import ChecksumError, ConfigError, ResidencyError
from hpccloud.io.hdf5 import (
    read_catalogue,
    read_region_file,
    read_shards,
    write_catalogue,
    write_input,
    write_region_file,
)
from hpccloud.policy import Policy
from hpccloud.shards import tile_2d
from hpccloud.topology import read_topology_text, topology_from_text


@pytest.fixture
def data():
    return np.random.default_rng(0).standard_normal((40, 60))


def test_each_rank_reads_only_its_hyperslabs(tmp_path, data):
    path = tmp_path / "in.h5"
    write_input(path, "data", data)
    m = tile_2d(data.shape, (4, 3), "<f8", size=3)
    seen = {}
    for rank in range(3):
        got = read_shards(path, "data", m, rank)
        assert sorted(got) == [s.id for s in m.shards_on(rank)]
        for sid, arr in got.items():
            np.testing.assert_array_equal(arr, data[m.shards[sid].index])
        seen.update(got)
    assert len(seen) == 12


def test_bad_inputs_name_the_file(tmp_path, data):
    path = tmp_path / "in.h5"
    write_input(path, "data", data)
    m = tile_2d(data.shape, (2, 2), "<f8", size=1)
    with pytest.raises(ConfigError, match="no dataset 'other'"):
        read_shards(path, "other", m, 0)
    with pytest.raises(ConfigError, match=r"shape \(40, 60\) does not match"):
        read_shards(path, "data", tile_2d((8, 8), (2, 2), "<f8", size=1), 0)
    with pytest.raises(ConfigError, match="dtype float64 but the workload needs float32"):
        read_shards(path, "data", tile_2d(data.shape, (2, 2), "<f4", size=1), 0)
    with pytest.raises(ConfigError, match="no such file"):
        read_shards(tmp_path / "missing.h5", "data", m, 0)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(ConfigError, match="not a readable HDF5 file"):
        read_shards(tmp_path / "junk.h5", "data", m, 0)


def test_corrupted_input_is_refused(tmp_path, data):
    path = tmp_path / "in.h5"
    write_input(path, "data", data)
    raw = bytearray(path.read_bytes())
    # flip a byte inside the stored values (find the first row's bytes in the file)
    at = bytes(raw).find(data[0, :4].tobytes())
    assert at > 0
    raw[at + 3] ^= 0xFF
    path.write_bytes(bytes(raw))
    m = tile_2d(data.shape, (1, 1), "<f8", size=1)
    with pytest.raises(ConfigError, match="corrupted data in shard 0"):
        read_shards(path, "data", m, 0)


def test_region_files_and_catalogue(tmp_path, data):
    text, source = read_topology_text(None)
    topo = topology_from_text(text, source, 2)
    policy = Policy.from_topology(topo)
    m = tile_2d(data.shape, (2, 2), "<f8", size=2,
                data_class=lambda sid, idx: "eu-personal" if sid == 0 else "public")
    by_region = {"eu-north": {0: data[m.shards[0].index], 1: data[m.shards[1].index]},
                 "us-east": {2: data[m.shards[2].index], 3: data[m.shards[3].index]}}
    files = {}
    for region, shards in by_region.items():
        files[region] = str(tmp_path / f"{region}.h5")
        write_region_file(files[region], region, m, shards, policy=policy)
    shard_region = {0: "eu-north", 1: "eu-north", 2: "us-east", 3: "us-east"}
    write_catalogue(tmp_path / "catalogue.h5", m, files, shard_region)
    np.testing.assert_array_equal(read_catalogue(tmp_path / "catalogue.h5"), data)
    back = read_region_file(files["eu-north"])
    assert back[0][2] == "eu-personal" and back[0][1] == m.shards[0].index
    # an eu-personal shard may not be stored in us-east: nothing is written
    with pytest.raises(ResidencyError, match="may not be stored in region 'us-east'"):
        write_region_file(tmp_path / "bad.h5", "us-east", m, {0: data[m.shards[0].index]}, policy=policy)
    assert not (tmp_path / "bad.h5").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # a shard changed after writing fails its checksum on read
    with h5py.File(files["us-east"], "r+") as f:
        f["shards/2"].attrs["xxh3"] = "0" * 16
    with pytest.raises(ChecksumError, match="shard 2 fails its xxh3 checksum"):
        read_region_file(files["us-east"])
