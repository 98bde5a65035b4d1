"""The import contract of the layers (read from the source with ``ast``, nothing is imported).

kernels and planners know nothing of MPI; only ``comm/``, the runner, the
measurements' probes, the commands and the test support talk MPI; library code
never imports the CLI.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at top level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _files(*parts: str) -> list[Path]:
    out = []
    for part in parts:
        p = ROOT / part
        out.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p])
    return out


PURE = ("kernels", "hpccloud/balance", "hpccloud/shards.py", "hpccloud/policy.py",
        "hpccloud/measure/links.py", "hpccloud/measure/speed.py", "hpccloud/report.py",
        "hpccloud/errors.py", "hpccloud/workloads/base.py", "hpccloud/runner/options.py",
        "hpccloud/topology.py", "hpccloud/hostlist.py", "hpccloud/keys.py", "hpccloud/preflight.py",
        "hpccloud/io/publish.py", "hpccloud/io/debris.py",
        "hpccloud/runner/residency.py", "hpccloud/runner/calibrate.py")


@pytest.mark.parametrize("path", _files(*PURE), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_layers_import_no_mpi(path):
    bad = sorted(m for m in _imports(path) if m.split(".")[0] == "mpi4py"
                 or m.startswith(("hpccloud.comm", "hpccloud.runner.loop", "hpccloud.runner.setup")))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


@pytest.mark.parametrize("path", [p for p in _files("hpccloud", "kernels")
                                  if "commands" not in p.parts and p.name not in ("cli.py", "__main__.py")],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_library_code_never_imports_the_cli(path):
    bad = sorted(m for m in _imports(path) if m.startswith(("hpccloud.commands", "hpccloud.cli")))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_planners_do_not_reach_up():
    for path in _files("hpccloud/balance"):
        bad = sorted(m for m in _imports(path) if m.startswith(("hpccloud.runner", "hpccloud.io",
                                                                 "hpccloud.measure.probe")))
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_building_the_cli_does_not_start_mpi():
    """``hpccloud --help`` imports every command (and, through the runner, the transport):
    none of them may import ``mpi4py.MPI`` (which initialises MPI) at module level."""
    import subprocess
    import sys

    code = ("import sys; from hpccloud.cli import build_parser; build_parser(); "
            "import hpccloud.comm.transport; print('mpi4py.MPI' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
