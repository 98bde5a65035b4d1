"""Self-describing outputs: provenance attributes, dimension scales, the XDMF sidecar."""

import json
import os
import xml.etree.ElementTree as ET

import h5py
import numpy as np
import pytest

from hpccloud.errors import InvalidArgument
from hpccloud.io.hdf5 import read_catalogue, write_catalogue, write_region_file
from hpccloud.io.provenance import Axis, config_digest, provenance
from hpccloud.io.xdmf import write_xdmf
from hpccloud.shards import tile_2d
from hpccloud.workloads.base import rows_map


def _publish(folder, m, data, axes, **kw):
    """Region files (two regions) + catalogue + sidecar, as the publish stage writes them."""
    meta = provenance(run_id="r-1", step=6, workload="demo", params={"n": data.shape[0], "hot": 0.5},
                      config={"steps": 6, "workload": "demo"}, ranks=2, topology="two")
    owner_region = {s.id: ("eu-north" if s.id % 2 == 0 else "us-east") for s in m.shards}
    files = {}
    for region in ("eu-north", "us-east"):
        files[region] = os.path.join(folder, f"{region}.h5")
        shards = {s.id: data[s.index] for s in m.shards if owner_region[s.id] == region}
        write_region_file(files[region], region, m, shards, attrs=meta)
    cat = os.path.join(folder, "catalogue.h5")
    write_catalogue(cat, m, files, owner_region, attrs=meta, axes=axes, **kw)
    write_xdmf(os.path.join(folder, "catalogue.xmf"), cat, "data", data.shape, data.dtype,
               axes=axes, time=6)
    return cat, files, meta


def _xdmf_targets(xmf):
    """(topology dims, [(h5 file, dataset, DataItem dims)]) of the sidecar's HDF items."""
    root = ET.parse(xmf).getroot()
    assert root.tag == "Xdmf" and root.get("Version") == "3.0"
    grid = root.find("Domain/Grid")
    topo = grid.find("Topology")
    items = []
    for item in grid.iter("DataItem"):
        if item.get("Format") == "HDF":
            fname, _, dset = item.text.strip().partition(":")
            items.append((fname, dset, tuple(int(n) for n in item.get("Dimensions").split())))
    return topo, items


def test_catalogue_is_self_describing(tmp_path):
    data = np.random.default_rng(0).standard_normal((12, 20))
    m = tile_2d(data.shape, (3, 2), "<f8", size=2)
    axes = [Axis("y", (np.arange(12) + 0.5) / 12, "m", "height"),
            Axis("x", (np.arange(20) + 0.5) / 20, "m", "width")]
    cat, files, meta = _publish(str(tmp_path), m, data, axes, units="K", long_name="temperature")
    np.testing.assert_array_equal(read_catalogue(cat, verify=False), data)
    with h5py.File(cat, "r") as f:
        for key in ("run_id", "step", "workload", "parameters", "config_digest", "hpccloud_version"):
            assert key in f.attrs, key
        assert f.attrs["step"] == 6 and f.attrs["run_id"] == "r-1"
        assert json.loads(f.attrs["parameters"]) == {"hot": 0.5, "n": 12}
        assert f.attrs["param_hot"] == 0.5
        assert f.attrs["config_digest"] == config_digest({"workload": "demo", "steps": 6})
        ds = f["data"]
        assert ds.attrs["units"] == "K" and ds.attrs["long_name"] == "temperature"
        assert [d.label for d in ds.dims] == ["y", "x"]
        for dim, ax in zip(ds.dims, axes, strict=True):
            scale = dim[0]
            assert scale.is_scale and scale.name == f"/{ax.name}"
            np.testing.assert_array_equal(scale[()], ax.values)
            assert scale.attrs["units"] == "m"
    for region, path in files.items():
        with h5py.File(path, "r") as f:
            assert f.attrs["region"] == region and f.attrs["run_id"] == "r-1"
            assert f.attrs["step"] == 6 and f.attrs["workload"] == "demo"


def test_netcdf_reader_sees_dimensions_and_coordinates(tmp_path):
    h5netcdf = pytest.importorskip("h5netcdf")
    data = np.arange(48.0).reshape(6, 8)
    m = tile_2d(data.shape, (2, 2), "<f8", size=2)
    axes = [Axis("y", np.linspace(0, 1, 6), "m"), Axis("x", np.linspace(0, 2, 8), "m")]
    cat, _, _ = _publish(str(tmp_path), m, data, axes, units="K")
    with h5netcdf.File(cat, "r") as f:
        var = f.variables["data"]
        assert var.dimensions == ("y", "x")
        assert dict(f.dimensions.items())["x"].size == 8
        np.testing.assert_array_equal(f.variables["x"][:], np.linspace(0, 2, 8))
        np.testing.assert_array_equal(var[:], data)
        assert var.attrs["units"] == "K"


def test_xdmf_points_at_the_catalogue_2d(tmp_path):
    data = np.random.default_rng(1).standard_normal((12, 20)).astype(np.float32)
    m = tile_2d(data.shape, (2, 2), "<f4", size=2)
    axes = [Axis("y", 0.5 + np.arange(12) * 0.25), Axis("x", -1.0 + np.arange(20) * 0.1)]
    _publish(str(tmp_path), m, data, axes)
    topo, items = _xdmf_targets(tmp_path / "catalogue.xmf")
    assert topo.get("TopologyType") == "2DCoRectMesh" and topo.get("Dimensions") == "12 20"
    assert items == [("catalogue.h5", "/data", (12, 20))]
    root = ET.parse(tmp_path / "catalogue.xmf").getroot()
    origin, spacing = (np.array(e.text.split(), float)
                       for e in root.find("Domain/Grid/Geometry").findall("DataItem"))
    np.testing.assert_allclose(origin, [0.5, -1.0])
    np.testing.assert_allclose(spacing, [0.25, 0.1])
    attr = root.find("Domain/Grid/Attribute")
    assert attr.get("Center") == "Node"
    assert attr.find("DataItem").get("NumberType") == "Float"
    assert attr.find("DataItem").get("Precision") == "4"
    assert root.find("Domain/Grid/Time").get("Value") == "6.0"
    # every HDF item names a dataset of that shape in a file beside the sidecar
    for fname, dset, dims in items:
        with h5py.File(tmp_path / fname, "r") as f:
            assert f[dset].shape == dims
            assert f[dset].dtype == np.float32


def test_xdmf_1d_result(tmp_path):
    labels = np.arange(30, dtype=np.int64) % 7
    m = rows_map(30, None, 5, "<i8", 2, ["public"] * 5)
    _publish(str(tmp_path), m, labels, None)
    topo, items = _xdmf_targets(tmp_path / "catalogue.xmf")
    dims = tuple(int(n) for n in topo.get("Dimensions").split())
    assert topo.get("TopologyType") == "2DCoRectMesh" and np.prod(dims) == 30
    assert items == [("catalogue.h5", "/data", (30,))]
    with h5py.File(tmp_path / "catalogue.h5", "r") as f:
        assert f["data"].shape == (30,) and f["data"].dims[0].label == "dim_0"
        np.testing.assert_array_equal(f["data"][()], labels)


def test_bad_axes_are_refused_before_writing(tmp_path):
    data = np.zeros((4, 6))
    m = tile_2d(data.shape, (1, 1), "<f8", size=1)
    files = {"r": str(tmp_path / "r.h5")}
    write_region_file(files["r"], "r", m, {0: data})
    cat = tmp_path / "catalogue.h5"
    with pytest.raises(InvalidArgument, match="axis 'x': \\(5,\\) coordinates for a dimension of 6"):
        write_catalogue(cat, m, files, {0: "r"}, axes=[Axis("y", np.arange(4)), Axis("x", np.arange(5))])
    with pytest.raises(InvalidArgument, match="names must be distinct"):
        write_catalogue(cat, m, files, {0: "r"}, axes=[Axis("y", np.arange(4)), Axis("y", np.arange(6))])
    with pytest.raises(InvalidArgument, match="1 given for a 2-D result"):
        write_catalogue(cat, m, files, {0: "r"}, axes=[Axis("y", np.arange(4))])
    assert not cat.exists()
    with pytest.raises(InvalidArgument, match="4-D result"):
        write_xdmf(tmp_path / "x.xmf", cat, "data", (1, 2, 3, 4), np.float64)
