"""The workloads ``hpccloud run`` can run; see :class:`hpccloud.workloads.base.Workload`.

Built in: ``stencil2d``, ``particles``, ``kmeans``, ``mandelbrot``, ``spmv``.
A user's own workload is a :class:`~hpccloud.workloads.base.Workload` subclass
in an installed package that declares it in the entry-point group
``hpccloud.workloads``; ``hpccloud run --workload NAME`` then runs it like a
built-in one (balancing, residency, checkpoints, output, trace). In the
package's ``pyproject.toml``::

    [project.entry-points."hpccloud.workloads"]
    logistic = "hpccloud_example_workload:Logistic"

If the workload's kernel is new too, register it in the kernel group
(``[project.entry-points."hpccloud.kernels"]``, see :mod:`kernels.registry`):
the runner compiles it before the clock starts and rates the ranks by it.
``examples/hpccloud-example-workload/`` is a complete, tested example.

>>> "stencil2d" in names()
True
>>> make_workload("stencil2d", {"n": 64, "grid": 2}).params["n"]
64
"""

from __future__ import annotations

from importlib.metadata import entry_points

from hpccloud.errors import InvalidArgument

ENTRY_POINT_GROUP = "hpccloud.workloads"

WORKLOADS = {
    "stencil2d": "hpccloud.workloads.stencil:Stencil2D",
    "particles": "hpccloud.workloads.particles:Particles",
    "kmeans": "hpccloud.workloads.kmeans:KMeans",
    "mandelbrot": "hpccloud.workloads.mandelbrot:Mandelbrot",
    "spmv": "hpccloud.workloads.spmv:SpMV",
}


def plugin_entry_points() -> dict:
    """Installed workloads of other packages: name → entry point (not loaded yet).

    A plug-in may not take a built-in's name; such an entry point is ignored.
    """
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in WORKLOADS}


def names() -> list[str]:
    """Sorted names of the built-in and installed workloads (no plug-in is imported)."""
    return sorted({*WORKLOADS, *plugin_entry_points()})


def workload_class(name: str):
    """The :class:`~hpccloud.workloads.base.Workload` subclass registered as ``name``.

    Raises
    ------
    InvalidArgument
        For an unknown name (listing the known ones), or a plug-in that fails to
        import or does not name a Workload subclass (naming its entry point).
    """
    import importlib

    from hpccloud.workloads.base import Workload

    if name in WORKLOADS:
        module, cls = WORKLOADS[name].split(":")
        return getattr(importlib.import_module(module), cls)
    ep = plugin_entry_points().get(name)
    if ep is None:
        raise InvalidArgument(f"unknown workload {name!r}. Fix: use one of {names()}, or install "
                              f"a package that declares it in the entry-point group "
                              f"{ENTRY_POINT_GROUP!r}")
    try:
        cls = ep.load()
    except Exception as exc:  # noqa: BLE001 - name the broken plug-in, never a bare traceback
        raise InvalidArgument(f"workload {name!r}: entry point {ep.value!r} in group "
                              f"{ENTRY_POINT_GROUP!r} failed to load: {type(exc).__name__}: {exc}. "
                              "Fix: reinstall the package that provides it") from exc
    if not (isinstance(cls, type) and issubclass(cls, Workload)):
        raise InvalidArgument(f"workload {name!r}: entry point {ep.value!r} names {cls!r}, not a "
                              "subclass of hpccloud.workloads.base.Workload. Fix: point it at the "
                              "workload class")
    return cls


def make_workload(name: str, params=None, seed: int = 0):
    """Instantiate workload ``name`` with ``params`` (a dict of overrides)."""
    wl = workload_class(name)(params, seed)
    if not wl.name:
        wl.name = name
    return wl


__all__ = ["ENTRY_POINT_GROUP", "WORKLOADS", "make_workload", "names", "workload_class"]
