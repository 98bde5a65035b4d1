"""The package type-checks: ``mypy`` with the ``[tool.mypy]`` settings of pyproject.toml (issue 19).

A cold run (no ``.mypy_cache``, as in a fresh CI clone) takes ~20 s; a warm one ~1 s.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                    reason="mypy is not installed (pip install 'hpccloud[test]')")
def test_mypy_clean() -> None:
    res = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, f"mypy found problems:\n{res.stdout}{res.stderr}"
