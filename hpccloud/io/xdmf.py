"""An XDMF 3 sidecar so ParaView and VisIt open an HDF5 result directly.

XDMF is XML that describes a mesh and points at the *heavy* data in HDF5
(``file.h5:/dataset``); both ParaView's and VisIt's XDMF readers load it. A
result array of 1, 2 or 3 dimensions is described as a uniform structured grid
with node-centred values:

* 2-D and 3-D: ``2DCoRectMesh`` / ``3DCoRectMesh`` (dimensions slowest axis
  first, like the HDF5 array) with an ``ORIGIN_DXDY`` / ``ORIGIN_DXDYDZ``
  geometry taken from the axes' coordinates when they are evenly spaced (else
  the index), in the same axis order as the dimensions.
* 1-D: XDMF has no 1-D structured mesh, so a ``2DCoRectMesh`` of ``1 × n``
  nodes; the attribute's ``DataItem`` keeps the HDF5 dataset's true shape
  ``n``, and the readers check the value count (``1 × n = n``).

The sidecar names the HDF5 file relative to its own folder, so an output
folder can be moved as a whole; it is written atomically.

>>> import numpy as np, tempfile, os
>>> d = tempfile.mkdtemp()
>>> write_xdmf(os.path.join(d, "c.xmf"), os.path.join(d, "c.h5"), "data", (4, 3), np.float64)
>>> "c.h5:/data" in open(os.path.join(d, "c.xmf")).read()
True
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence

import numpy as np

from hpccloud.errors import InvalidArgument
from hpccloud.io.atomic import write_bytes_atomic


def number_type(dtype) -> tuple[str, int]:
    """XDMF ``NumberType`` and ``Precision`` of a numpy dtype.

    >>> number_type(np.float32), number_type(np.int64), number_type(np.uint8)
    (('Float', 4), ('Int', 8), ('UChar', 1))
    """
    dt = np.dtype(dtype)
    if dt.kind == "f" and dt.itemsize in (4, 8):
        return "Float", dt.itemsize
    if dt.kind == "i" and dt.itemsize in (1, 2, 4, 8):
        return ("Char" if dt.itemsize == 1 else "Int"), dt.itemsize
    if dt.kind in "ub" and dt.itemsize in (1, 2, 4, 8):
        return ("UChar" if dt.itemsize == 1 else "UInt"), dt.itemsize
    raise InvalidArgument(f"XDMF: dtype {dt} has no XDMF number type. Fix: write the result "
                          "as float32/64 or a (u)int of 1-8 bytes")


def _origin_spacing(axes, shape) -> tuple[list[float], list[float]]:
    origin, spacing = [], []
    for k, n in enumerate(shape):
        values = None if axes is None else np.asarray(axes[k].values, dtype=np.float64)
        if values is not None and values.shape == (n,) and n > 1:
            step = np.diff(values)
            if np.allclose(step, step[0], rtol=1e-9, atol=0.0) and step[0] != 0:
                origin.append(float(values[0]))
                spacing.append(float(step[0]))
                continue
        if values is not None and values.shape == (1,):
            origin.append(float(values[0]))
            spacing.append(1.0)
            continue
        origin.append(0.0)
        spacing.append(1.0)
    return origin, spacing


def _xml_item(parent, values: Sequence[float]) -> None:
    item = ET.SubElement(parent, "DataItem", Dimensions=str(len(values)), NumberType="Float",
                         Precision="8", Format="XML")
    item.text = " ".join(repr(float(v)) for v in values)


def xdmf_text(h5_ref: str, dataset: str, shape: Sequence[int], dtype, axes=None,
              name: str | None = None, time: float | None = None) -> str:
    """The XDMF 3 document for ``h5_ref:/dataset`` of ``shape`` (see the module docstring).

    Parameters
    ----------
    h5_ref : str
        The HDF5 file as the reader should find it (relative to the ``.xmf``).
    dataset : str
        The dataset's path in the file.
    shape, dtype
        The dataset's shape and dtype.
    axes : sequence of Axis, optional
        Coordinates per dimension; evenly spaced ones set the geometry.
    name : str, optional
        The attribute's name (default: ``dataset``).
    time : float, optional
        A ``<Time>`` value (the step), so a series of files animates.
    """
    shape = tuple(int(n) for n in shape)
    if not 1 <= len(shape) <= 3:
        raise InvalidArgument(f"XDMF: a {len(shape)}-D result {shape} has no structured XDMF "
                              "mesh. Fix: only 1-, 2- and 3-D results get an XDMF sidecar")
    if axes is not None and len(axes) != len(shape):
        raise InvalidArgument(f"XDMF: {len(axes)} axes for a {len(shape)}-D result")
    ntype, precision = number_type(dtype)
    mesh_shape = shape if len(shape) > 1 else (1, shape[0])
    origin, spacing = _origin_spacing(axes, shape)
    if len(shape) == 1:
        origin, spacing = [0.0, *origin], [1.0, *spacing]
    root = ET.Element("Xdmf", Version="3.0")
    domain = ET.SubElement(root, "Domain")
    grid = ET.SubElement(domain, "Grid", Name=name or dataset.strip("/"), GridType="Uniform")
    if time is not None:
        ET.SubElement(grid, "Time", Value=repr(float(time)))
    dims = " ".join(str(n) for n in mesh_shape)
    ET.SubElement(grid, "Topology", TopologyType=f"{len(mesh_shape)}DCoRectMesh", Dimensions=dims)
    geometry = ET.SubElement(grid, "Geometry",
                             GeometryType="ORIGIN_DXDY" if len(mesh_shape) == 2 else "ORIGIN_DXDYDZ")
    _xml_item(geometry, origin)
    _xml_item(geometry, spacing)
    attr = ET.SubElement(grid, "Attribute", Name=name or dataset.strip("/"), AttributeType="Scalar",
                         Center="Node")
    item = ET.SubElement(attr, "DataItem", Dimensions=" ".join(str(n) for n in shape),
                         NumberType=ntype, Precision=str(precision), Format="HDF")
    item.text = f"{h5_ref}:/{dataset.lstrip('/')}"
    ET.indent(root)
    return ('<?xml version="1.0" ?>\n<!DOCTYPE Xdmf SYSTEM "Xdmf.dtd" []>\n'
            + ET.tostring(root, encoding="unicode") + "\n")


def write_xdmf(path: str | os.PathLike, h5_path: str | os.PathLike, dataset: str,
               shape: Sequence[int], dtype, axes=None, name: str | None = None,
               time: float | None = None) -> None:
    """Write the sidecar ``path`` for ``h5_path:/dataset`` atomically (see :func:`xdmf_text`)."""
    path = os.fspath(path)
    ref = os.path.relpath(os.path.abspath(os.fspath(h5_path)), os.path.dirname(os.path.abspath(path)))
    write_bytes_atomic(path, xdmf_text(ref, dataset, shape, dtype, axes, name, time).encode())


__all__ = ["number_type", "write_xdmf", "xdmf_text"]
