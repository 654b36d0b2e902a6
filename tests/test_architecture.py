"""ARCHITECTURE.md stays true: it places every module of the three packages."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
MODULES = sorted(p for p in ROOT.glob("packages/*/src/*/*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(ROOT)) for p in MODULES])
def test_every_module_has_its_place_in_architecture_md(path: Path) -> None:
    # A new module must be placed in the map (what it holds, which layer) when it is added.
    assert f"`{path.name}`" in TEXT, f"ARCHITECTURE.md does not mention {path.relative_to(ROOT)}"
