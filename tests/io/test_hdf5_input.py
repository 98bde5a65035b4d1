"""HDF5 --input refused up front with one message naming file, dataset and fix."""

import h5py
import numpy as np
import pytest

from hpccloud.errors import ConfigError
from hpccloud.io.hdf5 import check_input, read_shards, write_input
from hpccloud.shards import tile_2d

SHAPE = (8, 6)


@pytest.fixture
def shard_map():
    return tile_2d(SHAPE, (2, 2), "<f8", size=1)


def _file(path, build):
    with h5py.File(path, "w") as f:
        build(f)
    return path


def _vds(f, src_file, src_name="d"):
    lay = h5py.VirtualLayout(SHAPE, "<f8")
    lay[:] = h5py.VirtualSource(src_file, src_name, shape=SHAPE)
    f.create_virtual_dataset("data", lay, fillvalue=0)


CASES = [
    ("group", lambda f: f.create_group("data").create_dataset("x", data=[1]),
     "'data' is a group, not a dataset"),
    ("soft", lambda f: f.__setitem__("data", h5py.SoftLink("/gone")),
     "no dataset 'data': it is a soft link to '/gone', which does not exist"),
    ("external", lambda f: f.__setitem__("data", h5py.ExternalLink("nofile.h5", "/d")),
     "external link to '/d' in 'nofile.h5', which cannot be opened"),
    ("vds missing file", lambda f: _vds(f, "gone.h5"), "virtual dataset source file 'gone.h5' is missing"),
    ("vds missing dataset", lambda f: (f.create_dataset("other", data=np.zeros(SHAPE)), _vds(f, ".", "nope")),
     "virtual dataset source"),
    ("absent", lambda f: f.create_dataset("other", data=[1.0]), "no dataset 'data': it does not exist"),
    ("soft loop", lambda f: (f.__setitem__("data", h5py.SoftLink("/b")),
                             f.__setitem__("b", h5py.SoftLink("data"))),
     "no dataset 'data': it is a soft link loop (/data -> /b -> /data), which leads to no object"),
    ("scalar", lambda f: f.create_dataset("data", data=1.0), "shape () does not match"),
    ("strings", lambda f: f.create_dataset("data", data=np.array([[b"ab"] * 6] * 8)), "dtype |S2 but"),
]


@pytest.mark.parametrize("case,build,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_structure(tmp_path, shard_map, case, build, message):
    path = _file(tmp_path / "in.h5", build)
    for call in (lambda: check_input(path, "data", SHAPE, "<f8"),
                 lambda: read_shards(path, "data", shard_map, 0)):
        with pytest.raises(ConfigError) as info:
            call()
        assert message in str(info.value) and str(path) in str(info.value)
        assert "Fix:" in str(info.value)


def test_vds_with_sources_present_reads(tmp_path, shard_map):
    data = np.arange(48.0).reshape(SHAPE)
    _file(tmp_path / "src.h5", lambda f: f.create_dataset("d", data=data))
    path = _file(tmp_path / "in.h5", lambda f: _vds(f, "src.h5"))
    check_input(path, "data", SHAPE, "<f8")
    got = read_shards(path, "data", shard_map, 0)
    np.testing.assert_array_equal(got[3], data[shard_map.shards[3].index])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_refused_unless_allowed(tmp_path, shard_map, bad):
    data = np.ones(SHAPE)
    data[7, 5] = bad
    path = tmp_path / "in.h5"
    write_input(path, "data", data)
    check_input(path, "data", SHAPE, "<f8")  # structure is fine
    with pytest.raises(ConfigError, match=r"1 NaN or infinite values in shard 3 .*--allow-nonfinite"):
        read_shards(path, "data", shard_map, 0)
    got = read_shards(path, "data", shard_map, 0, allow_nonfinite=True)
    assert not np.isfinite(got[3]).all()


def test_not_hdf5_or_a_folder(tmp_path):
    (tmp_path / "x.h5").write_text("hello")
    with pytest.raises(ConfigError, match="x.h5: not a readable HDF5 file"):
        check_input(tmp_path / "x.h5", "data", SHAPE, "<f8")
    with pytest.raises(ConfigError, match="is a folder"):
        check_input(tmp_path, "data", SHAPE, "<f8")


@pytest.mark.parametrize("declared", [48 * 8, h5py.h5f.UNLIMITED])
def test_external_raw_file_shorter_than_the_dataset_refused(tmp_path, shard_map, declared):
    data = np.arange(48.0).reshape(SHAPE)
    raw = tmp_path / "raw.bin"
    raw.write_bytes(data.tobytes()[:200])  # HDF5 would read the missing 184 bytes as zeros
    path = _file(tmp_path / "in.h5", lambda f: f.create_dataset(
        "data", shape=SHAPE, dtype="<f8", external=[(str(raw), 0, declared)]))
    want = (f"{path}:data: external raw data file {raw} holds 200 bytes, but the dataset reads "
            "384 bytes from offset 0 (up to byte 384); the rest would read as zeros. Fix: restore "
            "the complete raw file, or regenerate the input")
    for call in (lambda: check_input(path, "data", SHAPE, "<f8"),
                 lambda: read_shards(path, "data", shard_map, 0)):
        with pytest.raises(ConfigError) as info:
            call()
        assert str(info.value) == want
    raw.write_bytes(data.tobytes())  # complete: read as written
    check_input(path, "data", SHAPE, "<f8")
    np.testing.assert_array_equal(read_shards(path, "data", shard_map, 0)[3],
                                  data[shard_map.shards[3].index])
