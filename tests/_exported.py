"""Checks shared by the export tests: an exported tree is plain PyTorch, and a process that cannot
import escnn or the project runs a saved program."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from torch import nn

PLAIN_MODULES = (
    "elayers._plain",
    "elayers._plain_spectral",
    "elayers._plain_transformer",
    "elayers._positional",
    "elayers._spectral_ops",
    "eregressors._plain",
    "eregressors._plain_unet",
)
PROJECT = ("escnn", "ereps", "elayers", "eregressors")


def _is_project(module_name: str) -> bool:
    return module_name.split(".")[0] in PROJECT and module_name not in PLAIN_MODULES


def assert_plain(module: nn.Module) -> None:
    """Every module is a ``torch.nn`` class or one of the torch-only plain classes, and no
    attribute anywhere holds an escnn, ereps or equivariant object."""
    for name, sub in module.named_modules():
        owner = type(sub).__module__
        assert owner.startswith("torch.") or owner in PLAIN_MODULES, (name, type(sub))
        for key, value in vars(sub).items():
            kind = type(value).__module__
            assert not _is_project(kind), (name, key, type(value))
            if isinstance(value, (list, tuple, dict)):
                items = value.values() if isinstance(value, dict) else value
                for item in items:
                    assert not _is_project(type(item).__module__), (name, key, type(item))


def runtime_imports(path: Path) -> set[str]:
    """Top-level modules a file imports at run time (``if TYPE_CHECKING:`` blocks excluded)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module is not None:
                found.add(node.module.split(".")[0])
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    visit([child])

    visit(tree.body)
    return found


BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys

    BLOCKED = {"escnn", "ereps", "elayers", "eregressors"}

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this process")
            return None

    sys.meta_path.insert(0, Blocker())
    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED:
            del sys.modules[name]
    """
)


def run_blocked(script: str, timeout: float = 300.0) -> str:
    """Run ``script`` in a fresh interpreter where escnn and the project cannot be imported."""
    probe = (
        "try:\n    import escnn\nexcept ImportError:\n    pass\n"
        "else:\n    raise SystemExit('escnn was importable')\n"
        "try:\n    import elayers\nexcept ImportError:\n    pass\n"
        "else:\n    raise SystemExit('elayers was importable')\n"
    )
    code = BLOCKER + probe + textwrap.dedent(script)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    num = float(torch.linalg.vector_norm((a - b).double()))
    den = max(float(torch.linalg.vector_norm(b.double())), 1e-300)
    return num / den
