"""The built-in kernels' :class:`~kernels.registry.KernelSpec` entries.

``bytes_per_unit`` is at float64 (STREAM convention: each array element read
or written once; write-allocate traffic not counted).
"""

from __future__ import annotations

import numpy as np

from kernels import histogram, kmeans, mandelbrot, particles, reductions, spmv, stencil, stream
from kernels.registry import KernelSpec

F64_F32 = (np.float64, np.float32)


def _n(x, *args, **kwargs) -> float:
    return float(x.size)


def _n_second(alpha, x, *args, **kwargs) -> float:
    return float(x.size)


SPECS = (
    KernelSpec("triad", stream.triad, stream.triad_reference, stream.make_triad_inputs, _n,
               bytes_per_unit=24.0, memory_bound=True, dtypes=F64_F32),
    KernelSpec("axpy", stream.axpy, stream.axpy_reference, stream.make_axpy_inputs, _n_second,
               bytes_per_unit=24.0, memory_bound=True, dtypes=F64_F32),
    KernelSpec("stream_copy", stream.stream_copy, stream.stream_copy_reference,
               stream.make_copy_inputs, _n, bytes_per_unit=16.0, memory_bound=True,
               dtypes=F64_F32),
    KernelSpec("sum", reductions.fixed_sum, reductions.sum_reference,
               reductions.make_vector_inputs, _n, bytes_per_unit=8.0, memory_bound=True,
               dtypes=F64_F32),
    KernelSpec("dot", reductions.dot, reductions.dot_reference, reductions.make_dot_inputs, _n,
               bytes_per_unit=16.0, memory_bound=True, dtypes=F64_F32),
    KernelSpec("norm2", reductions.norm2, reductions.norm2_reference,
               reductions.make_vector_inputs, _n, bytes_per_unit=8.0, memory_bound=True,
               dtypes=F64_F32),
    KernelSpec("stencil2d", stencil.stencil2d, stencil.stencil2d_reference, stencil.make_inputs,
               stencil.work_units, bytes_per_unit=16.0, halo_width=1, memory_bound=True,
               dtypes=F64_F32),
    KernelSpec("particles", particles.particles, particles.particles_reference,
               particles.make_inputs, particles.work_units, bytes_per_unit=72.0,
               memory_bound=False, dtypes=F64_F32),
    KernelSpec("particles_route", particles.route, particles.route_reference,
               particles.make_route_inputs, particles.work_units, bytes_per_unit=80.0,
               memory_bound=True, dtypes=(np.float64,)),
    KernelSpec("mandelbrot", mandelbrot.mandelbrot, mandelbrot.mandelbrot_reference,
               mandelbrot.make_inputs, mandelbrot.work_units, bytes_per_unit=4.0,
               memory_bound=False, dtypes=(np.float64,)),
    KernelSpec("kmeans", kmeans.kmeans, kmeans.kmeans_reference, kmeans.make_inputs,
               kmeans.work_units, bytes_per_unit=40.0, memory_bound=False, dtypes=F64_F32),
    KernelSpec("spmv", spmv.spmv, spmv.spmv_reference, spmv.make_inputs, spmv.work_units,
               bytes_per_unit=20.0, memory_bound=True, dtypes=F64_F32),
    KernelSpec("histogram", histogram.histogram, histogram.histogram_reference,
               histogram.make_inputs, histogram.work_units, bytes_per_unit=8.0,
               memory_bound=True, dtypes=F64_F32),
)
