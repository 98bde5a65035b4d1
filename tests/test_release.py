"""Release basics: licence, citation and changelog exist and agree on the version."""

import re
import tomllib
from pathlib import Path

import hpccloud

ROOT = Path(__file__).resolve().parents[1]


def test_one_version_everywhere():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    cff = re.search(r"^version:\s*(\S+)", (ROOT / "CITATION.cff").read_text(), re.M).group(1)
    assert project["version"] == hpccloud.__version__ == cff
    assert project["license"]["text"] == "BSD-3-Clause"
    assert "BSD 3-Clause License" in (ROOT / "LICENSE").read_text()


def test_changelog_has_the_version_and_the_tag_scheme():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{hpccloud.__version__}]" in text and "## [Unreleased]" in text
    assert "vMAJOR.MINOR.PATCH" in text
