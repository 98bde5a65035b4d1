"""Machine limits and output targets refused before any work, with the figures and the fix."""

import os

import pytest

from hpccloud.errors import ConfigError
from hpccloud.preflight import check_disk, check_memory, node_memory, probe_file, probe_folder
from hpccloud.workloads import make_workload


def test_node_memory_is_plausible():
    mem = node_memory()
    assert 0 < mem.available_bytes <= mem.total_bytes
    assert mem.total_bytes <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def test_memory_refused_per_node_with_figures():
    est = make_workload("stencil2d", {"n": 120_000}).estimate(4)  # ~116 GiB of cells
    have = node_memory().available_bytes
    with pytest.raises(ConfigError) as info:
        check_memory(["n1"] * 4, [est.peak_bytes_per_rank] * 4, [have] * 4,
                     "workload stencil2d", "use more nodes or a smaller --param n")
    msg = str(info.value)
    assert "the 4 ranks on node n1 would need about" in msg and "GiB" in msg
    assert "Fix: use more nodes" in msg
    # the same job spread one rank per node fits what each node has
    small = make_workload("stencil2d").estimate(4).peak_bytes_per_rank
    check_memory(["a", "b", "c", "d"], [small] * 4, [have] * 4, "w", "f")


def test_disk_summed_per_file_system(tmp_path):
    free = __import__("shutil").disk_usage(tmp_path).free
    check_disk([("--output", str(tmp_path), free // 4), ("--checkpoint-dir", str(tmp_path), free // 4)])
    with pytest.raises(ConfigError, match=r"not enough disk space.*--output .*--checkpoint-dir"):
        check_disk([("--output", str(tmp_path), free // 2), ("--checkpoint-dir", str(tmp_path), free // 2)])


def test_targets(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="--output .*file: is a file, not a folder"):
        probe_folder("--output", str(tmp_path / "file"))
    with pytest.raises(ConfigError, match="--json .*: is a folder, not a file"):
        probe_file("--json", str(tmp_path))
    with pytest.raises(ConfigError, match="--plots .*cannot create the folder"):
        probe_folder("--plots", str(tmp_path / "file" / "sub"))
    probe_folder("--plots", str(tmp_path / "new" / "plots"))
    assert (tmp_path / "new" / "plots").is_dir() and not os.listdir(tmp_path / "new" / "plots")
    probe_file("--audit", str(tmp_path / "file"), append=True)
    probe_file("--json", str(tmp_path / "deep" / "r.json"))
    assert not (tmp_path / "deep" / "r.json").exists()
