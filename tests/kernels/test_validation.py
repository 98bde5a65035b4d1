"""Bad input gets one InvalidArgument naming the kernel and argument, never a Numba error."""

import numpy as np
import pytest

import kernels
from hpccloud.errors import InvalidArgument
from kernels import histogram, kmeans, mandelbrot, particles, spmv, stencil, stream
from kernels.reductions import dot, fixed_sum, norm2

V = np.ones(8)


@pytest.mark.parametrize("call, words", [
    (lambda: stream.triad(V.astype(np.int64), V, 1.0), ["triad", "b", "int64"]),
    (lambda: stream.triad(V, V.astype(np.float32), 1.0), ["triad", "c", "float32"]),
    (lambda: stream.triad(V, np.ones(7), 1.0), ["triad", "same shape"]),
    (lambda: stream.triad(V, V, "2"), ["triad", "s"]),
    (lambda: stream.triad(np.ones(16)[::2], V, 1.0), ["triad", "contiguous"]),
    (lambda: stream.triad(V, V, 1.0, out=np.ones(8, np.float32)), ["triad", "out"]),
    (lambda: stream.triad([1.0], V, 1.0), ["triad", "numpy array"]),
    (lambda: stream.axpy(1.0, V, np.ones((2, 4))), ["axpy", "1-D"]),
    (lambda: fixed_sum(np.ones((2, 2))), ["sum", "1-D"]),
    (lambda: dot(V, V.astype(np.float32)), ["dot", "y"]),
    (lambda: norm2(V.astype(np.complex128)), ["norm2", "complex128"]),
    (lambda: stencil.stencil2d(np.ones((1, 5))), ["stencil2d", ">= 2"]),
    (lambda: stencil.stencil2d(np.ones(5)), ["stencil2d", "2-D"]),
    (lambda: stencil.stencil2d(np.ones((5, 6)).T), ["stencil2d", "contiguous"]),
    (lambda: stencil.stencil2d(np.ones((4, 4)), out=np.ones((4, 5))), ["stencil2d", "out", "shape"]),
    (lambda: particles.particles(V, V, V, V, (0, 1, 0), 0.1, 0.1), ["particles", "bounds"]),
    (lambda: particles.particles(V, V, V, V, (1, 0, 0, 1), 0.1, 0.1), ["particles", "x1 > x0"]),
    (lambda: particles.particles(V, V, V, V, (0, 1, 0, 1), 0.1, 0.0), ["particles", "cutoff"]),
    (lambda: particles.particles(V * np.nan, V, V, V, (0, 1, 0, 1), 0.1, 0.1), ["particles", "NaN"]),
    (lambda: mandelbrot.mandelbrot(-2, 1, -1, 1, 4.5, 4, 10), ["mandelbrot", "nx", "integer"]),
    (lambda: mandelbrot.mandelbrot(-2, 1, -1, 1, 4, -1, 10), ["mandelbrot", "ny"]),
    (lambda: kmeans.kmeans(np.ones((4, 2)), np.ones((2, 3))), ["kmeans", "features"]),
    (lambda: kmeans.kmeans(np.ones((4, 2)), np.ones((0, 2))), ["kmeans", "at least one"]),
    (lambda: spmv.spmv(np.array([0, 2]), np.array([0, 5]), np.ones(2), np.ones(3)),
     ["spmv", "column indices"]),
    (lambda: spmv.spmv(np.array([0, 3]), np.array([0, 1]), np.ones(2), np.ones(3)),
     ["spmv", "indptr"]),
    (lambda: spmv.spmv(np.array([0.0, 1.0]), np.array([0]), np.ones(1), np.ones(3)),
     ["spmv", "indptr", "float64"]),
    (lambda: histogram.histogram(V, 1.0, 1.0, 4), ["histogram", "hi > lo"]),
    (lambda: histogram.histogram(V, 0.0, 1.0, 0), ["histogram", "nbins"]),
])
def test_bad_input_is_invalid_argument(call, words):
    with pytest.raises(InvalidArgument) as info:
        call()
    message = str(info.value)
    for word in words:
        assert word in message, message
    assert "numba" not in message.lower()


def test_stencil_out_must_not_alias_input():
    a = np.ones((6, 6))
    with pytest.raises(InvalidArgument, match="shares memory"):
        stencil.stencil2d(a, out=a)


def test_every_registered_kernel_rejects_an_int_array():
    """Each kernel's first array argument as int64: a clear error, not a typing error."""
    for name in kernels.names():
        spec = kernels.get(name)
        args = list(spec.make_inputs(16, spec.dtypes[0], 0))
        idx = next((i for i, a in enumerate(args) if isinstance(a, np.ndarray)
                    and a.dtype.kind == "f"), None)
        if idx is None:
            continue  # mandelbrot takes scalars only (checked above)
        args[idx] = args[idx].astype(np.int64)
        with pytest.raises(InvalidArgument, match=name if name != "sum" else "sum"):
            spec.kernel(*args)
