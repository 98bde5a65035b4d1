"""The registry: built-ins, lookup errors, user registration and the entry-point group."""

import importlib.metadata as md

import numpy as np
import pytest

import kernels
from hpccloud.errors import InvalidArgument
from kernels import registry

BUILTINS = {"triad", "axpy", "stream_copy", "sum", "dot", "norm2", "stencil2d", "particles",
            "particles_route", "mandelbrot", "kmeans", "spmv", "histogram"}


def test_builtins_registered_with_consistent_specs():
    assert BUILTINS <= set(kernels.names())
    for name in BUILTINS:
        spec = kernels.get(name)
        assert spec.name == name
        assert spec.halo_width == (1 if name == "stencil2d" else 0)
        assert spec.bytes_per_unit > 0
        for dtype in spec.dtypes:
            args = spec.make_inputs(100, dtype, 0)
            assert isinstance(args, tuple)
            units = spec.work_units(*args)
            assert isinstance(units, float) and 50 <= units <= 200, (name, units)
    with pytest.raises(Exception):  # noqa: B017 - frozen dataclass
        kernels.get("triad").name = "x"


def test_unknown_kernel_names_it_and_lists_known():
    with pytest.raises(InvalidArgument) as info:
        kernels.get("stencil3d")
    msg = str(info.value)
    assert "stencil3d" in msg and "stencil2d" in msg and "triad" in msg


def _double(x):
    return 2.0 * x


def _spec(name):
    return kernels.KernelSpec(
        name=name, kernel=_double, reference=_double,
        make_inputs=lambda n_units, dtype=np.float64, seed=0: (np.ones(n_units, dtype),),
        work_units=lambda x: float(x.size), bytes_per_unit=16.0, halo_width=0,
        memory_bound=True, dtypes=(np.float64,))


def test_register_user_kernel():
    try:
        kernels.register(_spec("user_double"))
        assert "user_double" in kernels.names()
        spec = kernels.get("user_double")
        np.testing.assert_array_equal(spec.kernel(*spec.make_inputs(3)), [2.0, 2.0, 2.0])
        with pytest.raises(InvalidArgument, match="already registered"):
            kernels.register(_spec("user_double"))
        kernels.register(_spec("user_double"), replace=True)
        with pytest.raises(InvalidArgument, match="KernelSpec"):
            kernels.register(_double)
    finally:
        registry.unregister("user_double")


# the entry points point at this module (tests/kernels is on sys.path during the tests)
PLUGIN_SPECS = [_spec("plugin_a"), _spec("plugin_b")]


def _plugin_factory():
    return _spec("plugin_c")


def test_entry_point_group(monkeypatch):
    eps = [md.EntryPoint("two", "test_registry:PLUGIN_SPECS", registry.ENTRY_POINT_GROUP),
           md.EntryPoint("one", "test_registry:_plugin_factory", registry.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(registry, "entry_points",
                        lambda group: eps if group == registry.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    try:
        assert {"plugin_a", "plugin_b", "plugin_c"} <= set(kernels.names())
        assert kernels.get("plugin_c").bytes_per_unit == 16.0
    finally:
        for name in ("plugin_a", "plugin_b", "plugin_c"):
            registry.unregister(name)


def test_broken_entry_point_is_named(monkeypatch):
    eps = [md.EntryPoint("broken", "no_such_module_xyz:SPEC", registry.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(registry, "entry_points", lambda group: eps)
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    with pytest.raises(InvalidArgument, match="broken.*no_such_module_xyz"):
        kernels.names()
