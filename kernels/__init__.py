"""hpccloud's Numba kernels: numpy in, numpy out, no MPI.

Every kernel has a plain-numpy twin (``reference``) and the numbers the
runtime needs to turn timings into rates (work units, bytes per unit, halo
width), all in a :class:`KernelSpec` in the registry::

    >>> import kernels
    >>> spec = kernels.get("stencil2d")
    >>> spec.halo_width, spec.bytes_per_unit
    (1, 16.0)
    >>> "triad" in kernels.names()
    True

Built-in kernels: ``triad``, ``axpy``, ``stream_copy`` (the bandwidth
reference), ``sum``, ``dot``, ``norm2``, ``stencil2d``, ``particles``,
``mandelbrot``, ``kmeans``, ``spmv``, ``histogram``. Add your own with
:func:`register` or the entry-point group ``hpccloud.kernels`` (see
:mod:`kernels.registry`).
"""

from kernels import builtin as _builtin
from kernels.registry import KernelSpec, get, names, register

for _spec in _builtin.SPECS:
    register(_spec, replace=True)
del _spec

__all__ = ["KernelSpec", "get", "names", "register"]
