"""The README's recipe and migration examples run as written (each block in a fresh namespace)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
SECTIONS = (
    "## Diffusion policies: equivariant normalization and sampling",
    "## Migrating from Diffusion Policy",
)


def _blocks(heading: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    section = text[start : end if end >= 0 else len(text)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


@pytest.mark.parametrize("heading", SECTIONS)
def test_readme_section_runs(heading: str) -> None:
    pytest.importorskip("diffusers", reason="the recipe uses diffusers' schedulers")
    blocks = _blocks(heading)
    assert blocks, f"no python block under {heading!r}"
    for code in blocks:
        exec(compile(code, f"README.md: {heading}", "exec"), {"__name__": "readme"})
