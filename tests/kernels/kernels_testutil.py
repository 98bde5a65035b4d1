"""Shared settings for the kernel tests (imported by the test modules)."""

import os

from hypothesis import HealthCheck, settings

NO_JIT = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")

# deadline off: the first example of a new dtype/shape class compiles (or loads) a kernel.
# Without JIT the kernels run as plain Python loops, so fewer (and the same small) examples.
SETTINGS = settings(max_examples=6 if NO_JIT else 30, deadline=None, derandomize=NO_JIT,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
