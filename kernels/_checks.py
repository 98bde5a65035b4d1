"""Input checks run in Python before a jitted function is called.

A Numba typing error names Numba internals, not the user's argument; these
checks turn a wrong dtype, shape or memory layout into one
:class:`~hpccloud.errors.InvalidArgument` that names the kernel, the argument
and the fix.
"""

from __future__ import annotations

import numbers
from typing import Literal, cast, overload

import numpy as np

from hpccloud.errors import InvalidArgument

FLOATS = (np.dtype(np.float64), np.dtype(np.float32))


def array(kernel: str, arg: str, value, *, ndim: int | None = None, dtypes=FLOATS,
          dtype=None, contiguous: bool = True) -> np.ndarray:
    """Check one array argument and return it.

    ``dtypes`` lists accepted dtypes; ``dtype`` (if given) requires exactly that
    dtype (e.g. to match another argument). Non-contiguous arrays are rejected,
    not silently copied: a silent copy would hide a per-call allocation (and,
    for ``out=``, lose the result).
    """
    if not isinstance(value, np.ndarray):
        raise InvalidArgument(
            f"{kernel}: {arg} must be a numpy array, got {type(value).__name__}. "
            f"Fix: pass np.asarray({arg}, dtype=np.float64)")
    if ndim is not None and value.ndim != ndim:
        raise InvalidArgument(
            f"{kernel}: {arg} must be {ndim}-D, got shape {value.shape}")
    if dtype is not None:
        if value.dtype != np.dtype(dtype):
            raise InvalidArgument(
                f"{kernel}: {arg} has dtype {value.dtype}, expected {np.dtype(dtype)} "
                f"(the same as the other arguments). Fix: {arg}.astype(np.{np.dtype(dtype)})")
    elif value.dtype not in tuple(np.dtype(d) for d in dtypes):
        names = ", ".join(str(np.dtype(d)) for d in dtypes)
        raise InvalidArgument(
            f"{kernel}: {arg} has dtype {value.dtype}; supported: {names}. "
            f"Fix: {arg}.astype(np.{np.dtype(dtypes[0])})")
    if contiguous and not value.flags.c_contiguous:
        raise InvalidArgument(
            f"{kernel}: {arg} is not C-contiguous (a view with strides {value.strides}). "
            f"Fix: pass np.ascontiguousarray({arg})")
    return value


def same_shape(kernel: str, arrays: dict[str, np.ndarray]) -> None:
    shapes = {name: a.shape for name, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        raise InvalidArgument(f"{kernel}: arrays must have the same shape, got {shapes}")


def out_array(kernel: str, out, shape, dtype, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Check ``out=``: right shape and dtype, contiguous, writeable, no overlap with inputs."""
    array(kernel, "out", out, dtype=dtype)
    if out.shape != tuple(shape):
        raise InvalidArgument(f"{kernel}: out has shape {out.shape}, expected {tuple(shape)}")
    if not out.flags.writeable:
        raise InvalidArgument(f"{kernel}: out is read-only. Fix: pass a writeable array")
    for name, a in inputs.items():
        if out is not a and np.may_share_memory(out, a):
            raise InvalidArgument(
                f"{kernel}: out overlaps {name} partially. Fix: pass a separate array or out={name}")
    return out


def no_overlap(kernel: str, out: np.ndarray, inputs: dict[str, np.ndarray]) -> None:
    """For kernels that read neighbours (stencil): out may not alias any input at all."""
    for name, a in inputs.items():
        if np.may_share_memory(out, a):
            raise InvalidArgument(
                f"{kernel}: out shares memory with {name}; the update reads neighbours "
                "that would already be overwritten. Fix: pass a separate output array")


@overload
def scalar(kernel: str, arg: str, value, *, integer: Literal[True], positive: bool = False,
           minimum=None) -> int: ...
@overload
def scalar(kernel: str, arg: str, value, *, integer: Literal[False] = False, positive: bool = False,
           minimum=None) -> float: ...
@overload
def scalar(kernel: str, arg: str, value, *, integer: bool = False, positive: bool = False,
           minimum=None) -> float | int: ...
def scalar(kernel: str, arg: str, value, *, integer: bool = False, positive: bool = False,
           minimum=None) -> float | int:
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        want = "an integer" if integer else "a real number"
        raise InvalidArgument(f"{kernel}: {arg} must be {want}, got {value!r}")
    if integer:
        value = int(cast(numbers.Integral, value))  # kind was Integral
    else:
        value = float(value)
        if not np.isfinite(value):
            raise InvalidArgument(f"{kernel}: {arg} must be finite, got {value!r}")
    if positive and value <= 0:
        raise InvalidArgument(f"{kernel}: {arg} must be > 0, got {value!r}")
    if minimum is not None and value < minimum:
        raise InvalidArgument(f"{kernel}: {arg} must be >= {minimum}, got {value!r}")
    return value


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def n_units_arg(kernel: str, n_units) -> int:
    return scalar(kernel, "n_units", n_units, integer=True, minimum=0)
