"""The examples in the kernels' docstrings run and give what they show."""

import doctest
import importlib

import pytest

MODULES = ["kernels", "kernels.registry", "kernels.stream", "kernels.reductions",
           "kernels.stencil", "kernels.particles", "kernels.mandelbrot", "kernels.kmeans",
           "kernels.spmv", "kernels.histogram", "hpccloud.compile"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    from kernels import registry

    try:
        result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    finally:
        registry.unregister("doc_scale")  # the registry example registers a kernel
    assert result.failed == 0
    assert result.attempted > 0
