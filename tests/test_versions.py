"""One version for every package: the repository's VERSION file, read by the build backend."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import elayers
import eregressors
import ereps

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTIONS = ("ereps", "elayers", "eregressors", "escnn-stubs")
VERSION = (ROOT / "VERSION").read_text(encoding="utf-8").strip()


def test_the_version_file_holds_one_valid_version() -> None:
    assert str(Version(VERSION)) == VERSION


@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_no_pyproject_writes_a_version_of_its_own(dist: str) -> None:
    text = (ROOT / "packages" / dist / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r"^version\s*=", text, re.MULTILINE) is None
    assert 'dynamic = ["version"]' in text
    match = re.search(r'^\[tool\.hatch\.version\]\npath = "([^"]+)"', text, re.MULTILINE)
    assert match is not None
    assert (ROOT / "packages" / dist / match.group(1)).resolve() == ROOT / "VERSION"


@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_installed_metadata_has_the_version(dist: str) -> None:
    # A stale editable install (VERSION edited, environment not re-synced) fails here.
    assert metadata.version(dist) == VERSION, "run `uv sync` after editing VERSION"


def test_dunder_versions_are_the_installed_version() -> None:
    assert ereps.__version__ == elayers.__version__ == eregressors.__version__ == VERSION


@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_first_party_requirements_admit_the_version(dist: str) -> None:
    # The packages are released together: a version bump must keep the pins between them valid.
    requirements = [Requirement(line) for line in metadata.requires(dist) or []]
    first_party = [r for r in requirements if r.name in DISTRIBUTIONS]
    for requirement in first_party:
        assert requirement.specifier.contains(VERSION), (dist, str(requirement), VERSION)
    expected = {"ereps": 1, "elayers": 1, "eregressors": 2, "escnn-stubs": 0}[dist]
    assert len(first_party) == expected, [str(r) for r in first_party]
