"""The kernel registry: name → :class:`KernelSpec`.

The built-in kernels register themselves when :mod:`kernels` is imported. Users
add their own in two ways:

* call :func:`register` with a :class:`KernelSpec` (e.g. at import of their module);
* declare an entry point in the group ``hpccloud.kernels`` of their package; it
  must load to a :class:`KernelSpec`, a list of them, or a zero-argument callable
  returning either. Entry points are loaded on the first :func:`get` or
  :func:`names` call.

Example
-------
>>> import numpy as np
>>> from kernels import KernelSpec, register, get
>>> def scale(x):
...     return 2.0 * x
>>> spec = register(KernelSpec(
...     name="doc_scale", kernel=scale, reference=scale,
...     make_inputs=lambda n_units, dtype=np.float64, seed=0: (np.ones(n_units, dtype),),
...     work_units=lambda x: float(x.size), bytes_per_unit=16.0, halo_width=0,
...     memory_bound=True, dtypes=(np.float64,)), replace=True)
>>> get("doc_scale").kernel(np.ones(2))
array([2., 2.])

In ``pyproject.toml`` of a user package::

    [project.entry-points."hpccloud.kernels"]
    my_kernel = "mypkg.kernels:MY_SPEC"
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

import numpy as np

from hpccloud.errors import InvalidArgument

ENTRY_POINT_GROUP = "hpccloud.kernels"


@dataclass(frozen=True)
class KernelSpec:
    """What the runtime needs to run a kernel and turn its timings into rates.

    Attributes
    ----------
    name : str
        Registry key.
    kernel : callable
        The Numba kernel (a thin validating wrapper around the jitted function):
        numpy in, numpy out, no MPI.
    reference : callable
        The plain-numpy twin: same signature, same result (within the kernel's
        stated tolerance).
    make_inputs : callable
        ``make_inputs(n_units, dtype=np.float64, seed=0) -> tuple`` of positional
        arguments for ``kernel``/``reference`` sized to about ``n_units`` work units.
    work_units : callable
        ``work_units(*args) -> float``: the work units of one call with ``args``.
    bytes_per_unit : float
        Bytes moved to/from main memory per work unit at float64 (roofline).
    halo_width : int
        Width of the halo the caller must fill (0 for all but ``stencil2d``).
    memory_bound : bool
        Whether the kernel's speed is bounded by memory bandwidth.
    dtypes : tuple
        The floating dtypes the kernel accepts.
    """

    name: str
    kernel: Callable
    reference: Callable
    make_inputs: Callable
    work_units: Callable
    bytes_per_unit: float
    halo_width: int = 0
    memory_bound: bool = False
    dtypes: tuple = (np.float64,)


_REGISTRY: dict[str, KernelSpec] = {}
_LOCK = threading.Lock()
_entry_points_loaded = False


def register(spec: KernelSpec, *, replace: bool = False) -> KernelSpec:
    """Add ``spec`` to the registry and return it.

    Raises
    ------
    InvalidArgument
        If ``spec`` is not a KernelSpec, or its name is taken and ``replace`` is False.
    """
    if not isinstance(spec, KernelSpec):
        raise InvalidArgument(
            f"register() takes a kernels.KernelSpec, got {type(spec).__name__}. "
            "Fix: wrap the kernel in KernelSpec(name=..., kernel=..., reference=..., ...)")
    if not spec.name or not isinstance(spec.name, str):
        raise InvalidArgument(f"KernelSpec.name must be a non-empty string, got {spec.name!r}")
    for field in ("kernel", "reference", "make_inputs", "work_units"):
        if not callable(getattr(spec, field)):
            raise InvalidArgument(f"KernelSpec {spec.name!r}: {field} must be callable")
    if spec.halo_width < 0:
        raise InvalidArgument(f"KernelSpec {spec.name!r}: halo_width must be >= 0")
    with _LOCK:
        if spec.name in _REGISTRY and not replace and _REGISTRY[spec.name] is not spec:
            raise InvalidArgument(
                f"a kernel named {spec.name!r} is already registered. "
                "Fix: choose another name or pass replace=True")
        _REGISTRY[spec.name] = spec
    return spec


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, KernelSpec):
                obj = obj()
            specs = obj if isinstance(obj, list | tuple) else [obj]
            for spec in specs:
                register(spec, replace=True)
        except Exception as exc:  # noqa: BLE001 - name the broken plug-in, never a bare traceback
            raise InvalidArgument(
                f"entry point {ep.name!r} = {ep.value!r} in group {ENTRY_POINT_GROUP!r} failed "
                f"to load: {type(exc).__name__}: {exc}. Fix: it must name a KernelSpec, a list "
                "of them, or a function returning either") from exc


def names() -> list[str]:
    """Sorted names of every registered kernel (built-ins, registered, entry points)."""
    _load_entry_points()
    return sorted(_REGISTRY)


def get(name: str) -> KernelSpec:
    """The :class:`KernelSpec` registered as ``name``.

    Raises
    ------
    InvalidArgument
        Naming the unknown kernel and listing the known ones.
    """
    _load_entry_points()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise InvalidArgument(
            f"unknown kernel {name!r}. Known kernels: {', '.join(sorted(_REGISTRY))}. "
            "Fix: use one of those or register your own with kernels.register()") from None


def unregister(name: str) -> None:
    """Remove ``name`` from the registry (for tests and plug-in reloads)."""
    with _LOCK:
        _REGISTRY.pop(name, None)
