"""Shards and the shard map: a global 1-D or 2-D array cut into blocks or tiles.

The :class:`ShardMap` is metadata only (no payloads) and is identical on every
rank: which global slice each shard covers, its dtype and bytes, its work units
(which travel with it), its data class, its owner rank and its face neighbours
(the halo graph). Every migration produces a new map with ``version + 1``.

Everything here is pure (no MPI): the partitioners take the rank count
``size`` as an argument, so a unit test can ask what 7 ranks would get.

>>> m = tile_2d((4, 6), (2, 3), "<f8", size=2)
>>> len(m), m.grid, m.shards[0].shape, m.shards[0].neighbours
(6, (2, 3), (2, 2), (1, 3))
>>> m.owners().tolist()
[0, 0, 0, 1, 1, 1]
>>> m.with_owners(m.owners()[::-1]).version
1
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from hpccloud.errors import InvalidArgument

DataClassSpec = str | Sequence[str] | Callable[[int, tuple[slice, ...]], str]
# per-map caches that depend on neither the owners nor the version (ShardMap.with_owners keeps them)
_OWNER_FREE_CACHES = ("_classes_key", "_layout_key")
_OWNER_CACHES = ("_owners", "_owners_bytes")


@dataclass(frozen=True)
class Shard:
    """One block (1-D) or tile (2-D) of the global array."""

    id: int
    index: tuple[slice, ...]
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    work_units: float
    data_class: str
    owner_rank: int
    neighbours: tuple[int, ...]


class ShardMap:
    """Where every shard of a global array lives; identical on every rank.

    Parameters
    ----------
    global_shape : shape of the whole array.
    dtype : numpy dtype string (``np.dtype(x).str``).
    shards : the shards, ``shards[i].id == i``.
    version : increases by one with every migration.
    grid : shards per dimension.
    halo_width : 0 (no halo) or 1 (a 5-point stencil's halo).
    """

    def __init__(self, global_shape, dtype, shards, version=0, grid=None, halo_width=0):
        self.global_shape = tuple(int(n) for n in global_shape)
        self.dtype = np.dtype(dtype).str
        self.shards = tuple(shards)
        self.version = int(version)
        self.grid = tuple(int(g) for g in grid) if grid is not None else (len(self.shards),)
        self.halo_width = int(halo_width)
        for i, s in enumerate(self.shards):
            if s.id != i:
                raise InvalidArgument(f"shard at position {i} has id {s.id}; ids must be 0..S-1 in order")
        if self.halo_width not in (0, 1):
            raise InvalidArgument(f"halo_width must be 0 or 1, got {self.halo_width}")

    def __len__(self) -> int:
        return len(self.shards)

    def __eq__(self, other) -> bool:
        return isinstance(other, ShardMap) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return (f"ShardMap(global_shape={self.global_shape}, dtype={self.dtype!r}, "
                f"shards={len(self)}, grid={self.grid}, version={self.version})")

    # ----------------------------------------------------------------- columns
    def _owner_array(self) -> np.ndarray:
        """The cached owner column (int64, read-only: never handed out)."""
        cached = self.__dict__.get("_owners")
        if cached is None:
            cached = np.fromiter((s.owner_rank for s in self.shards), np.int64, len(self))
            cached.flags.writeable = False
            self._owners = cached
        return cached

    def owners(self) -> np.ndarray:
        """Owner rank per shard (a new array each call; the map itself never changes)."""
        return self._owner_array().copy()

    def owners_bytes(self) -> bytes:
        """The owner column as int64 bytes (cached): a cheap, exact key for the owners.

        >>> block_1d(4, 2, "<f8", 2).owners_bytes() == np.array([0, 1], np.int64).tobytes()
        True
        """
        cached = self.__dict__.get("_owners_bytes")
        if cached is None:
            cached = self._owner_array().tobytes()
            self._owners_bytes = cached
        return cached

    def data_classes_key(self) -> bytes:
        """The data class of every shard, as one exact, hashable key (cached).

        Equal keys mean equal class lists; a map from :meth:`with_owners` inherits
        its parent's key (owners move, classes do not), so callers that cache by
        classes (the residency check) pay for the key once per map lineage.
        """
        cached = self.__dict__.get("_classes_key")
        if cached is None:
            cached = json.dumps(self.data_classes(), ensure_ascii=False).encode()
            self._classes_key = cached
        return cached

    def layout_key(self) -> bytes:
        """A 128-bit digest of the global shape and dtype and every shard's shape, dtype and
        data class (cached; kept by :meth:`with_owners` and :meth:`with_work_units`).

        What a migration's byte plan depends on besides the owners: two maps with
        the same key cut the same payloads.
        """
        cached = self.__dict__.get("_layout_key")
        if cached is None:
            h = hashlib.blake2b(repr((self.global_shape, self.dtype)).encode(), digest_size=16)
            h.update(repr([(s.shape, s.dtype, s.data_class) for s in self.shards]).encode())
            cached = h.digest()
            self._layout_key = cached
        return cached

    def work_units(self) -> np.ndarray:
        return np.fromiter((s.work_units for s in self.shards), np.float64, len(self))

    def nbytes(self) -> np.ndarray:
        return np.fromiter((s.nbytes for s in self.shards), np.int64, len(self))

    def data_classes(self) -> list[str]:
        return [s.data_class for s in self.shards]

    def shards_on(self, rank: int) -> list[Shard]:
        return [s for s in self.shards if s.owner_rank == rank]

    def halo_edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each undirected face edge once: ``(u, v, halo_bytes)`` with ``u < v``.

        ``halo_bytes`` is what one side sends the other per step: the length of
        the shared face times ``halo_width`` times the item size (0 without a halo).
        """
        itemsize = np.dtype(self.dtype).itemsize
        us, vs, bs = [], [], []
        for s in self.shards:
            for n in s.neighbours:
                if n > s.id:
                    us.append(s.id)
                    vs.append(n)
                    bs.append(_face_len(s, self.shards[n]) * self.halo_width * itemsize)
        return (np.asarray(us, np.int64), np.asarray(vs, np.int64), np.asarray(bs, np.int64))

    # ----------------------------------------------------------------- new maps
    def _replaced(self, shards, version: int, keep: tuple[str, ...] = ()) -> ShardMap:
        new = ShardMap(self.global_shape, self.dtype, shards, version, self.grid, self.halo_width)
        for name in keep:  # caches the change leaves valid
            if name in self.__dict__:
                new.__dict__[name] = self.__dict__[name]
        return new

    def with_owners(self, owners, version: int | None = None) -> ShardMap:
        """A new map with the given owner per shard and ``version + 1`` (a migration).

        ``version`` overrides the new version: where data is first *placed*
        (nothing has moved yet) the caller keeps the old one.
        """
        owners = np.asarray(owners)
        if owners.shape != (len(self),) or owners.dtype.kind not in "iu":
            raise InvalidArgument(f"owners must be an integer array of shape ({len(self)},), "
                                  f"got {owners.dtype} {owners.shape}")
        version = self.version + 1 if version is None else int(version)
        if (owners.dtype.kind == "u" and owners.dtype.itemsize == 8 and len(owners)
                and owners.max() > np.iinfo(np.int64).max):
            shards = [s if s.owner_rank == o else replace(s, owner_rank=o)  # not an int64 column
                      for s, o in zip(self.shards, owners.tolist(), strict=True)]
            return self._replaced(shards, version)
        new_owners = owners.astype(np.int64)  # a private copy, cached on the new map
        new_owners.setflags(write=False)
        # only the shards whose owner changes are rebuilt; ids, order and layout are the
        # parent's, already checked, so the new map skips the constructor's checks
        shards = list(self.shards)
        if len(shards) <= 64:  # a Python pass is quicker than numpy's on a few shards
            changed = [i for i, (s, o) in enumerate(zip(shards, new_owners.tolist(), strict=True))
                       if s.owner_rank != o]
        else:
            changed = np.flatnonzero(new_owners != self._owner_array()).tolist()
        for i in changed:
            shards[i] = _with_owner(shards[i], int(new_owners[i]))
        new = object.__new__(ShardMap)
        new.__dict__.update(global_shape=self.global_shape, dtype=self.dtype, shards=tuple(shards),
                            version=version, grid=self.grid, halo_width=self.halo_width,
                            _owners=new_owners)
        for name in _OWNER_FREE_CACHES:  # what depends on neither owners nor version carries over
            if name in self.__dict__:
                new.__dict__[name] = self.__dict__[name]
        return new

    def with_work_units(self, work_units) -> ShardMap:
        """A new map with new work units per shard; same version (nothing moved)."""
        w = np.asarray(work_units, np.float64)
        if w.shape != (len(self),):
            raise InvalidArgument(f"work_units must have shape ({len(self)},), got {w.shape}")
        shards = [replace(s, work_units=float(x)) for s, x in zip(self.shards, w, strict=True)]
        return self._replaced(shards, self.version, _OWNER_CACHES + _OWNER_FREE_CACHES)

    def with_classes(self, classes: Sequence[str]) -> ShardMap:
        """A new map whose shards have the given data classes; same version."""
        shards = [replace(s, data_class=c) for s, c in zip(self.shards, classes, strict=True)]
        return self._replaced(shards, self.version)

    def with_shapes(self, shapes: dict[int, tuple[int, ...]]) -> ShardMap:
        """A new map in which the shards in ``shapes`` have new shapes (and bytes); same version."""
        itemsize = np.dtype(self.dtype).itemsize
        shards = [replace(s, shape=tuple(shapes[s.id]), nbytes=int(np.prod(shapes[s.id])) * itemsize)
                  if s.id in shapes else s for s in self.shards]
        return self._replaced(shards, self.version)

    # ----------------------------------------------------------------- JSON
    def to_json(self) -> dict[str, Any]:
        return {
            "global_shape": list(self.global_shape),
            "dtype": self.dtype,
            "version": self.version,
            "grid": list(self.grid),
            "halo_width": self.halo_width,
            "shards": [
                {"id": s.id, "index": [[sl.start, sl.stop] for sl in s.index], "shape": list(s.shape),
                 "dtype": s.dtype, "nbytes": s.nbytes, "work_units": s.work_units,
                 "data_class": s.data_class, "owner_rank": s.owner_rank,
                 "neighbours": list(s.neighbours)}
                for s in self.shards
            ],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ShardMap:
        try:
            shards = [
                Shard(int(s["id"]), tuple(slice(int(a), int(b)) for a, b in s["index"]),
                      tuple(int(n) for n in s["shape"]), str(s["dtype"]), int(s["nbytes"]),
                      float(s["work_units"]), str(s["data_class"]), int(s["owner_rank"]),
                      tuple(int(n) for n in s["neighbours"]))
                for s in d["shards"]
            ]
            return cls(d["global_shape"], d["dtype"], shards, d["version"], d["grid"], d["halo_width"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgument(f"not a valid ShardMap JSON document ({type(exc).__name__}: {exc}). "
                                  "Fix: write it with ShardMap.to_json()") from None


def _with_owner(s: Shard, owner_rank: int) -> Shard:
    """``replace(s, owner_rank=owner_rank)`` without re-running the dataclass machinery."""
    new = object.__new__(Shard)
    new.__dict__.update(s.__dict__)
    new.__dict__["owner_rank"] = owner_rank
    return new


def _face_len(a: Shard, b: Shard) -> int:
    """Length of the face shared by two neighbouring shards (1 for 1-D blocks)."""
    if len(a.index) == 1:
        return 1
    (ar, ac), (br, _) = a.index, b.index
    if ar == br:  # side by side: they share a column face of the tile's height
        return ar.stop - ar.start
    return ac.stop - ac.start


# --------------------------------------------------------------------------- partitioners


def split_even(n: int, parts: int) -> list[tuple[int, int]]:
    """Cut ``range(n)`` into ``parts`` contiguous pieces whose lengths differ by at most one.

    >>> split_even(10, 3)
    [(0, 4), (4, 7), (7, 10)]
    """
    if parts < 1 or parts > n:
        raise InvalidArgument(f"cannot cut {n} items into {parts} pieces; need 1 <= pieces <= {n}")
    base, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        stop = start + base + (1 if i < extra else 0)
        out.append((start, stop))
        start = stop
    return out


def assign_owners(work_units: np.ndarray, size: int, speeds=None) -> np.ndarray:
    """Owners in contiguous runs of shard ids, proportional to rank speed.

    Without ``speeds`` each rank gets an equal share of the work; with them,
    rank ``r`` gets a share ``speeds[r] / sum(speeds)``. Runs stay contiguous
    so neighbouring shards tend to share a rank.

    >>> assign_owners(np.ones(6), 2).tolist()
    [0, 0, 0, 1, 1, 1]
    >>> assign_owners(np.ones(6), 2, speeds=[2.0, 1.0]).tolist()
    [0, 0, 0, 0, 1, 1]
    """
    w = np.asarray(work_units, np.float64)
    if size < 1:
        raise InvalidArgument(f"size must be >= 1, got {size}")
    v = np.ones(size) if speeds is None else np.asarray(speeds, np.float64)
    if v.shape != (size,) or not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise InvalidArgument(f"speeds must be {size} positive finite numbers, got {speeds!r}")
    if len(w) == 0:
        return np.zeros(0, np.int64)
    # a shard goes to the rank whose share of the cumulative work holds its midpoint
    mid = (np.cumsum(w) - w / 2) / w.sum()
    bounds = np.cumsum(v) / v.sum()
    return np.minimum(np.searchsorted(bounds, mid, side="left"), size - 1).astype(np.int64)


def _classes(spec: DataClassSpec, indices: Sequence[tuple[slice, ...]]) -> list[str]:
    if isinstance(spec, str):
        return [spec] * len(indices)
    if callable(spec):
        return [str(spec(i, idx)) for i, idx in enumerate(indices)]
    out = [str(c) for c in spec]
    if len(out) != len(indices):
        raise InvalidArgument(f"data_class lists {len(out)} classes for {len(indices)} shards")
    return out


def block_1d(n: int, n_shards: int, dtype, size: int, *, speeds=None,
             data_class: DataClassSpec = "public", work_units=None, halo_width: int = 0) -> ShardMap:
    """Cut a 1-D array of ``n`` items into ``n_shards`` contiguous blocks.

    ``work_units`` defaults to the item count of each block; ``data_class`` is
    one name, a list (one per shard) or a function ``(shard_id, index) -> name``.

    >>> m = block_1d(10, 4, "<f8", size=2)
    >>> [s.index[0] for s in m.shards][:2], m.owners().tolist()
    ([slice(0, 3, None), slice(3, 6, None)], [0, 0, 1, 1])
    """
    spans = split_even(int(n), int(n_shards))
    itemsize = np.dtype(dtype).itemsize
    indices = [(slice(a, b),) for a, b in spans]
    w = np.array([b - a for a, b in spans], np.float64) if work_units is None else np.asarray(work_units, np.float64)
    if w.shape != (n_shards,):
        raise InvalidArgument(f"work_units must have {n_shards} entries, got shape {w.shape}")
    owners = assign_owners(w, size, speeds)
    classes = _classes(data_class, indices)
    shards = [
        Shard(i, indices[i], (b - a,), np.dtype(dtype).str, (b - a) * itemsize, float(w[i]), classes[i],
              int(owners[i]), tuple(j for j in (i - 1, i + 1) if 0 <= j < n_shards))
        for i, (a, b) in enumerate(spans)
    ]
    return ShardMap((n,), dtype, shards, 0, (n_shards,), halo_width)


def tile_2d(shape, grid, dtype, size: int, *, speeds=None, data_class: DataClassSpec = "public",
            work_units=None, halo_width: int = 1) -> ShardMap:
    """Cut a 2-D array into a ``grid = (rows, cols)`` of tiles, row-major ids.

    Tile ``(i, j)`` has id ``i * cols + j``; its neighbours are the tiles
    sharing a face (up, left, right, down), sorted. Owners run in contiguous
    id ranges (row bands), evenly or weighted by ``speeds``.
    """
    ny, nx = (int(v) for v in shape)
    gy, gx = (int(v) for v in grid)
    rows, cols = split_even(ny, gy), split_even(nx, gx)
    itemsize = np.dtype(dtype).itemsize
    indices = [(slice(*rows[i]), slice(*cols[j])) for i in range(gy) for j in range(gx)]
    shapes = [(r.stop - r.start, c.stop - c.start) for r, c in indices]
    n_shards = gy * gx
    w = (np.array([a * b for a, b in shapes], np.float64) if work_units is None
         else np.asarray(work_units, np.float64))
    if w.shape != (n_shards,):
        raise InvalidArgument(f"work_units must have {n_shards} entries, got shape {w.shape}")
    owners = assign_owners(w, size, speeds)
    classes = _classes(data_class, indices)
    shards = []
    for sid, (idx, shp) in enumerate(zip(indices, shapes, strict=True)):
        i, j = divmod(sid, gx)
        nbrs = [(i + di) * gx + (j + dj) for di, dj in ((-1, 0), (0, -1), (0, 1), (1, 0))
                if 0 <= i + di < gy and 0 <= j + dj < gx]
        shards.append(Shard(sid, idx, shp, np.dtype(dtype).str, shp[0] * shp[1] * itemsize,
                            float(w[sid]), classes[sid], int(owners[sid]), tuple(sorted(nbrs))))
    return ShardMap((ny, nx), dtype, shards, 0, (gy, gx), halo_width)


def with_classes(shard_map: ShardMap, classes: Sequence[str]) -> ShardMap:
    """:meth:`ShardMap.with_classes` as a function."""
    return shard_map.with_classes(classes)


__all__ = ["Shard", "ShardMap", "assign_owners", "block_1d", "split_even", "tile_2d",
           "with_classes"]
