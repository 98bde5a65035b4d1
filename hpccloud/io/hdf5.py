"""HDF5 input and per-region output, with checksums verified on read.

Input
    :func:`read_shards` opens the input file **read-only** (several ranks may do
    so at once with the serial PyPI h5py) and reads only the hyperslabs of the
    shards a rank owns. :func:`write_input` writes a chunked dataset with
    HDF5's Fletcher-32 filter, so a flipped byte is refused by the library on
    read, plus an xxh3 checksum per shard-sized block.

Output
    One file per region (``<out>/<region>.h5``) holds that region's shards as
    ``/shards/<id>`` datasets with their global index, data class and checksum:
    data never leaves its region in storage either. A catalogue file
    (``<out>/catalogue.h5``) holds only a *virtual dataset* that stitches the
    global array from the region files (relative paths), so the whole result
    reads as one array where all region files are visible.

Self-describing output
    Every output file carries the run's provenance (run id, step, workload and
    parameters, config digest, hpccloud version; :mod:`hpccloud.io.provenance`)
    as root attributes. The catalogue's dataset also carries ``units`` and
    ``long_name`` (CF names, which xarray shows) and one coordinate dataset per
    axis, attached as an HDF5 *dimension scale*, so netCDF-4 readers
    (h5netcdf, xarray) see named dimensions with coordinates. An XDMF sidecar
    (:mod:`hpccloud.io.xdmf`) lets ParaView and VisIt open the catalogue.

All files are written atomically (:mod:`hpccloud.io.atomic`).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping

import h5py
import numpy as np
import xxhash

from hpccloud.errors import ChecksumError, ConfigError
from hpccloud.io.atomic import atomic_path


def checksum(arr: np.ndarray) -> str:
    """xxh3-64 of an array's bytes in C order, as 16 hex digits."""
    return xxhash.xxh3_64_hexdigest(np.ascontiguousarray(arr).data)


def _index_attr(index: tuple[slice, ...]) -> np.ndarray:
    return np.array([[s.start, s.stop] for s in index], dtype=np.int64)


def _index_from_attr(attr) -> tuple[slice, ...]:
    return tuple(slice(int(a), int(b)) for a, b in np.asarray(attr))


def _chunks(shape: tuple[int, ...]) -> tuple[int, ...] | None:
    if not shape or 0 in shape:
        return None
    # about 1 MiB chunks of float64 along the first axis
    rows = max(1, min(shape[0], (1 << 17) // max(1, int(np.prod(shape[1:])))))
    return (rows, *shape[1:])


def open_readonly(path: str | os.PathLike) -> h5py.File:
    """Open an HDF5 file read-only with a clear error naming the file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ConfigError(f"{path}: no such file. Fix: check the path")
    if os.path.isdir(path):
        raise ConfigError(f"{path}: is a folder, not an HDF5 file. Fix: give the file inside it")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ConfigError(f"{path}: not a readable HDF5 file ({exc}). Fix: regenerate it, or "
                          "check that it was copied completely") from None


def _absolute(group: str, path: str) -> str:
    """``path`` as an absolute HDF5 path, relative paths taken from ``group``."""
    return posixpath.normpath(posixpath.join(group, path)).replace("//", "/")


def _link_problem(f: h5py.File, name: str) -> str:
    """Why ``f[name]`` cannot be opened, in words (a dangling soft or external link, or absent)."""
    try:
        link = f.get(name, getlink=True)
    except (KeyError, ValueError, OSError, RuntimeError):
        link = None
    if isinstance(link, h5py.SoftLink):
        chain = [_absolute("/", name)]
        while isinstance(link, h5py.SoftLink) and len(chain) < 64:
            target = _absolute(posixpath.dirname(chain[-1]), link.path)
            if target in chain:
                return ("is a soft link loop (" + " -> ".join(chain + [target]) + "), which "
                        "leads to no object")
            chain.append(target)
            try:
                link = f.get(target, getlink=True)
            except (KeyError, ValueError, OSError, RuntimeError):
                link = None
        if link is None:
            return f"is a soft link to {chain[-1]!r}, which does not exist"
        return f"is a soft link to {chain[-1]!r} ({len(chain) - 1} links), which cannot be opened"
    if isinstance(link, h5py.ExternalLink):
        return f"is an external link to {link.path!r} in {link.filename!r}, which cannot be opened"
    parent = name.rsplit("/", 1)[0] if "/" in name.strip("/") else "/"
    try:
        near = sorted(f[parent].keys()) if isinstance(f.get(parent), h5py.Group) else []
    except (KeyError, ValueError, OSError):
        near = []
    return f"does not exist (the file has {near[:10]})"


def _vds_source_file(vds_path: str, file_name: str) -> str | None:
    """The file HDF5 would open for a virtual source (prefix variable, the VDS's folder,
    the working folder), or None when none exists."""
    if file_name == ".":
        return vds_path
    if os.path.isabs(file_name):
        return file_name if os.path.isfile(file_name) else None
    candidates = [os.path.join(os.environ.get("HDF5_VDS_PREFIX", ""), file_name)] \
        if os.environ.get("HDF5_VDS_PREFIX") else []
    candidates += [os.path.join(os.path.dirname(os.path.abspath(vds_path)), file_name), file_name]
    return next((c for c in candidates if os.path.isfile(c)), None)


def _check_virtual_sources(path: str, dataset: str, ds: h5py.Dataset) -> None:
    """Refuse a virtual dataset whose source files or datasets are missing (HDF5 would
    silently read its fill value there)."""
    by_file: dict[str, set[str]] = {}
    for vs in ds.virtual_sources():
        found = _vds_source_file(path, vs.file_name)
        if found is None:
            raise ConfigError(f"{path}:{dataset}: virtual dataset source file {vs.file_name!r} is "
                              "missing (it would read as fill values). Fix: put the source files "
                              "beside the file, or read the region files instead")
        by_file.setdefault(found, set()).add(vs.dset_name)
    for found, names in by_file.items():
        with open_readonly(found) as src:
            for name in sorted(names):
                if not isinstance(src.get(name), h5py.Dataset):
                    raise ConfigError(f"{path}:{dataset}: virtual dataset source {found}:{name} "
                                      "is missing or not a dataset. Fix: regenerate the file or "
                                      "its sources")


def _check_external(path: str, dataset: str, ds: h5py.Dataset) -> None:
    """Refuse external raw storage whose files are missing or shorter than the dataset needs
    (HDF5 reads the missing bytes as zeros, without an error)."""
    need = int(np.prod(ds.shape or ())) * ds.dtype.itemsize
    for name, offset, size in ds.external:
        ext = name.decode() if isinstance(name, bytes) else str(name)
        beside = ext if os.path.isabs(ext) else os.path.join(os.path.dirname(os.path.abspath(path)), ext)
        found = next((c for c in (ext, beside) if os.path.isfile(c)), None)
        if found is None:
            raise ConfigError(f"{path}:{dataset}: external raw data file {ext!r} is missing. "
                              "Fix: put it beside the file")
        part = min(int(size), need)  # the last segment may be declared unlimited
        have = os.path.getsize(found)
        if part > 0 and have < int(offset) + part:
            raise ConfigError(f"{path}:{dataset}: external raw data file {found} holds {have} "
                              f"bytes, but the dataset reads {part} bytes from offset {int(offset)} "
                              f"(up to byte {int(offset) + part}); the rest would read as zeros. "
                              "Fix: restore the complete raw file, or regenerate the input")
        need -= part
        if need <= 0:
            break


def _input_dataset(path: str, f: h5py.File, dataset: str, global_shape, dtype) -> h5py.Dataset:
    """The input dataset, checked: really a dataset, links resolve, virtual sources present,
    shape and dtype those of the workload."""
    try:
        obj = f[dataset]
    except (KeyError, ValueError, OSError, RuntimeError):  # RuntimeError: a soft link loop
        raise ConfigError(f"{path}: no dataset {dataset!r}: it {_link_problem(f, dataset)}. "
                          "Fix: pass the right --input-dataset") from None
    if not isinstance(obj, h5py.Dataset):
        raise ConfigError(f"{path}: {dataset!r} is a {type(obj).__name__.lower()}, not a dataset "
                          f"(it holds {sorted(obj.keys())[:10] if isinstance(obj, h5py.Group) else '?'}). "
                          "Fix: pass the path of a dataset to --input-dataset")
    if obj.is_virtual:
        _check_virtual_sources(path, dataset, obj)
    if obj.external:
        _check_external(path, dataset, obj)
    if tuple(obj.shape or ()) != tuple(global_shape):
        raise ConfigError(f"{path}:{dataset}: shape {tuple(obj.shape or ())} does not match the "
                          f"workload's {tuple(global_shape)}. Fix: set the workload size to the "
                          "dataset's shape")
    if obj.dtype != np.dtype(dtype):
        raise ConfigError(f"{path}:{dataset}: dtype {obj.dtype} but the workload needs "
                          f"{np.dtype(dtype)}. Fix: convert the dataset")
    return obj


def check_input(path: str | os.PathLike, dataset: str, global_shape, dtype) -> None:
    """Check an input file before any work, without reading its data.

    Refuses (:class:`~hpccloud.errors.ConfigError`, naming the file, dataset and
    fix): a missing or unreadable file, a group given as the dataset, dangling
    soft or external links, soft link loops, a virtual dataset with a missing
    source file or dataset, external raw files missing or shorter than the
    dataset, a shape or dtype other than the workload's. Non-finite values are found shard by shard in :func:`read_shards`.
    """
    path = os.fspath(path)
    with open_readonly(path) as f:
        _input_dataset(path, f, dataset, global_shape, dtype)


def write_input(path: str | os.PathLike, dataset: str, data: np.ndarray,
                attrs: Mapping[str, object] | None = None) -> None:
    """Write ``data`` as a chunked, Fletcher-32-protected dataset (atomically)."""
    with atomic_path(path, ".h5") as tmp, h5py.File(tmp, "w") as f:
        ds = f.create_dataset(dataset, data=data, chunks=_chunks(data.shape), fletcher32=True)
        ds.attrs["xxh3"] = checksum(data)
        for k, v in (attrs or {}).items():
            ds.attrs[k] = v


def read_shards(path: str | os.PathLike, dataset: str, shard_map, rank: int,
                allow_nonfinite: bool = False) -> dict[int, np.ndarray]:
    """Read the hyperslabs of the shards ``rank`` owns; returns ``{shard id: array}``.

    Raises :class:`ConfigError` naming the file and dataset for everything
    :func:`check_input` refuses, for a chunk whose Fletcher-32 checksum fails
    (a corrupted file), and for NaN or infinite values unless ``allow_nonfinite``.
    """
    path = os.fspath(path)
    out: dict[int, np.ndarray] = {}
    with open_readonly(path) as f:
        ds = _input_dataset(path, f, dataset, shard_map.global_shape, shard_map.dtype)
        floating = ds.dtype.kind in "fc"
        for shard in shard_map.shards_on(rank):
            try:
                arr = np.ascontiguousarray(ds[shard.index])
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise ConfigError(f"{path}:{dataset}: corrupted data in shard {shard.id} {shard.index} "
                                  f"({exc}). Fix: restore the file from a good copy") from None
            if floating and not allow_nonfinite and not np.isfinite(arr).all():
                bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
                raise ConfigError(f"{path}:{dataset}: {bad} NaN or infinite values in shard "
                                  f"{shard.id} (rows {shard.index[0].start}..{shard.index[0].stop - 1}). "
                                  "Fix: clean the input, or pass --allow-nonfinite if they are meant")
            out[shard.id] = arr
    return out


def write_region_file(path: str | os.PathLike, region: str, shard_map,
                      shards: Mapping[int, np.ndarray], policy=None,
                      attrs: Mapping[str, object] | None = None) -> None:
    """Write one region's shards to ``path`` atomically.

    With ``policy``, every shard's data class is checked against the region
    first: a shard that may not live there raises before anything is written.
    ``attrs`` (e.g. :func:`~hpccloud.io.provenance.provenance`) become root
    attributes; nested values are stored as JSON text.
    """
    if policy is not None:
        from hpccloud.errors import ResidencyError

        for sid in shards:
            dc = shard_map.shards[sid].data_class
            if not policy.may_live(dc, region):
                raise ResidencyError(f"shard {sid} of data class {dc!r} may not be stored in "
                                     f"region {region!r}; nothing was written")
    with atomic_path(path, ".h5") as tmp, h5py.File(tmp, "w") as f:
        _set_attrs(f, attrs)
        f.attrs["region"] = region
        f.attrs["global_shape"] = np.array(shard_map.global_shape, dtype=np.int64)
        f.attrs["n_shards"] = len(shards)
        grp = f.create_group("shards")
        for sid in sorted(shards):
            arr = shards[sid]
            shard = shard_map.shards[sid]
            ds = grp.create_dataset(str(sid), data=arr, chunks=_chunks(arr.shape),
                                    fletcher32=arr.size > 0)
            ds.attrs["index"] = _index_attr(shard.index)
            ds.attrs["data_class"] = shard.data_class
            ds.attrs["xxh3"] = checksum(arr)


def _set_attrs(obj, attrs: Mapping[str, object] | None) -> None:
    from hpccloud.io.provenance import attr_value

    for key, value in (attrs or {}).items():
        if value is not None:
            obj.attrs[key] = attr_value(value)


def read_region_file(path: str | os.PathLike) -> dict[int, tuple[np.ndarray, tuple[slice, ...], str]]:
    """Read a region file back, verifying every shard's checksum.

    Returns ``{shard id: (array, global index, data class)}``.
    """
    path = os.fspath(path)
    out = {}
    with open_readonly(path) as f:
        for name, ds in f["shards"].items():
            try:
                arr = ds[()]
            except OSError as exc:
                raise ChecksumError(f"{path}: shard {name} is corrupted ({exc})") from None
            if checksum(arr) != ds.attrs["xxh3"]:
                raise ChecksumError(f"{path}: shard {name} fails its xxh3 checksum; refusing it")
            out[int(name)] = (arr, _index_from_attr(ds.attrs["index"]), str(ds.attrs["data_class"]))
    return out


def write_catalogue(path: str | os.PathLike, shard_map, region_files: Mapping[str, str],
                    shard_region: Mapping[int, str], dataset: str = "data", *,
                    attrs: Mapping[str, object] | None = None, axes=None,
                    units: str | None = None, long_name: str | None = None) -> None:
    """Write a catalogue whose virtual dataset stitches the global array from region files.

    Parameters
    ----------
    path : path
        The catalogue file (written atomically).
    shard_map : ShardMap
        The result's map: global shape, dtype and each shard's index.
    region_files : mapping
        Region → region file path; stored relative to the catalogue's folder.
    shard_region : mapping
        Shard id → the region whose file holds it.
    dataset : str
        Name of the virtual dataset.
    attrs : mapping, optional
        Root attributes (the run's provenance).
    axes : sequence, optional
        One :class:`~hpccloud.io.provenance.Axis` per dimension (name, coordinate
        values, units, long name): each becomes a 1-D dataset made a dimension
        scale and attached to ``dataset``'s dimension. Default: ``dim_0``, … with
        the index as coordinate.
    units, long_name : str, optional
        CF attributes of ``dataset``.

    Raises
    ------
    InvalidArgument
        If an axis does not match the array's shape or two axes share a name.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    shape = tuple(int(n) for n in shard_map.global_shape)
    axes = _checked_axes(axes, shape, dataset)
    layout = h5py.VirtualLayout(shape=shape, dtype=np.dtype(shard_map.dtype))
    for shard in shard_map.shards:
        src = os.path.relpath(os.path.abspath(region_files[shard_region[shard.id]]), folder)
        layout[shard.index] = h5py.VirtualSource(src, f"shards/{shard.id}", shape=tuple(shard.shape))
    with atomic_path(path, ".h5") as tmp, h5py.File(tmp, "w") as f:
        ds = f.create_virtual_dataset(dataset, layout,
                                      fillvalue=np.nan if np.dtype(shard_map.dtype).kind == "f" else 0)
        _set_attrs(f, attrs)
        f.attrs["regions"] = np.array(sorted(region_files), dtype=h5py.string_dtype())
        f.attrs["files"] = np.array([os.path.relpath(os.path.abspath(region_files[r]), folder)
                                     for r in sorted(region_files)], dtype=h5py.string_dtype())
        if units is not None:
            ds.attrs["units"] = units
        if long_name:
            ds.attrs["long_name"] = long_name
        for dim, ax in enumerate(axes):
            coord = f.create_dataset(ax.name, data=np.asarray(ax.values))
            if ax.units is not None:
                coord.attrs["units"] = ax.units
            if ax.long_name:
                coord.attrs["long_name"] = ax.long_name
            coord.make_scale(ax.name)
            ds.dims[dim].attach_scale(coord)
            ds.dims[dim].label = ax.name


def _checked_axes(axes, shape: tuple[int, ...], dataset: str) -> list:
    from hpccloud.errors import InvalidArgument
    from hpccloud.io.provenance import Axis

    if axes is None:
        axes = [Axis(f"dim_{i}", np.arange(n)) for i, n in enumerate(shape)]
    axes = list(axes)
    if len(axes) != len(shape):
        raise InvalidArgument(f"catalogue axes: {len(axes)} given for a {len(shape)}-D result "
                              f"{shape}. Fix: give one Axis per dimension")
    names = [ax.name for ax in axes]
    if len(set(names)) != len(names) or dataset in names:
        raise InvalidArgument(f"catalogue axes {names}: names must be distinct and differ from "
                              f"the dataset {dataset!r}. Fix: rename the axes")
    for ax, n in zip(axes, shape, strict=True):
        if np.asarray(ax.values).shape != (n,):
            raise InvalidArgument(f"catalogue axis {ax.name!r}: {np.asarray(ax.values).shape} "
                                  f"coordinates for a dimension of {n}. Fix: one value per index")
    return axes


def read_catalogue(path: str | os.PathLike, dataset: str = "data", verify: bool = True) -> np.ndarray:
    """Read the stitched global array through the catalogue's virtual dataset.

    HDF5 resolves the relative source paths against the catalogue's folder, so
    the output folder can be moved or copied as a whole. With ``verify`` (the
    default) a folder published by ``hpccloud run`` is checked whole first
    against its ``manifest.json`` (every file's size and xxh3, the run id and
    step of every HDF5 file; :func:`hpccloud.io.publish.verify_output`), and a
    run's catalogue without its manifest — a run that did not finish — is
    refused instead of being read as a mix of runs.
    """
    path = os.fspath(path)
    if verify:
        from hpccloud.io.publish import MANIFEST, verify_output

        folder = os.path.dirname(os.path.abspath(path))
        if os.path.exists(os.path.join(folder, MANIFEST)):
            verify_output(folder)
        else:
            with open_readonly(path) as f:
                run_id = f.attrs.get("run_id")
            if run_id is not None:
                raise ChecksumError(f"{path}: written by run {run_id!s}, but its folder has no "
                                    f"{MANIFEST}: the run did not finish publishing. Fix: rerun "
                                    "the job (or read with verify=False to look at the pieces)")
    with open_readonly(path) as f:
        return f[dataset][()]
