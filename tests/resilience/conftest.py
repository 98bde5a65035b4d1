"""The uninterrupted reference run, shared by the recovery tests."""

import pytest
from recovery_helpers import hpccloud_run, result


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """The uninterrupted run (2 ranks, no checkpoints): ``(report, array)``."""
    folder = str(tmp_path_factory.mktemp("reference"))
    res = hpccloud_run([], 2, folder, "ref")
    assert res.returncode == 0, res.stderr[-3000:]
    return result(folder, "ref")
