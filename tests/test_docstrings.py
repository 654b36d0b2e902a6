"""Docstrings render as Google style: sections parse, entries name real arguments, pydoc works.

ruff's pydocstyle rules (``D``, google convention) check that sections exist and are named right,
but not the layout inside them: a continuation line that lost its indentation in a reflow (an
``Args:`` entry followed by a line at the entries' indentation that is no ``name: text``, or
section text that falls back to the section's own indentation) passes ruff and renders as a bogus
argument or a stray paragraph. This test parses every docstring of the packages and of ``tools/``
(without importing them), renders the public API with ``pydoc`` and runs every ``Examples:``
section of the packages as a doctest.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import pydoc
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(ROOT.glob("packages/*/src/**/*.py")) + sorted(ROOT.glob("tools/*.py"))
PUBLIC_MODULES = ("ereps", "ereps.testing", "elayers", "eregressors")


def _module_name(path: Path) -> str:
    """``packages/<dist>/src/a/b.py`` -> ``a.b`` (``a/__init__.py`` -> ``a``)."""
    src = ROOT / "packages" / path.relative_to(ROOT / "packages").parts[0] / "src"
    parts = path.relative_to(src).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# Every module of the three packages (their docstrings' examples run as doctests).
LIBRARY_MODULES = sorted(_module_name(path) for path in ROOT.glob("packages/*/src/**/*.py"))

SECTION = re.compile(
    r"^(?P<indent> *)(?P<name>Args|Arguments|Parameters|Keyword Args|Keyword Arguments|"
    r"Other Parameters|Attributes|Raises|Returns|Yields|Examples|Example|Note|Notes|Warning|"
    r"Warnings|See Also|Todo|References):\s*$"
)
# Sections made of ``name: description`` entries (``name (type): description`` allowed).
ENTRY_SECTIONS = {
    "Args",
    "Arguments",
    "Parameters",
    "Keyword Args",
    "Keyword Arguments",
    "Other Parameters",
    "Attributes",
    "Raises",
}
ARG_SECTIONS = ENTRY_SECTIONS - {"Attributes", "Raises"}
ENTRY = re.compile(r"^(?P<name>\*{0,2}[A-Za-z_][\w.]*)(?: \([^)]*\))?:(?:\s|$)")


@dataclass(frozen=True)
class Section:
    """One Google-style section of a docstring: its name and its entry names."""

    name: str
    entries: tuple[str, ...]


def parse_google(doc: str) -> tuple[list[Section], list[str]]:
    """Parse the sections of a cleaned docstring; return them and the layout problems found."""
    lines = doc.splitlines()
    sections: list[Section] = []
    problems: list[str] = []
    i = 0
    while i < len(lines):
        match = SECTION.match(lines[i])
        if match is None:
            i += 1
            continue
        base, name = len(match["indent"]), match["name"]
        entries: list[str] = []
        body_indent: int | None = None
        last = i
        j = i + 1
        while j < len(lines):
            line = lines[j]
            text = line.strip()
            if not text:
                j += 1
                continue
            indent = len(line) - len(line.lstrip())
            if indent <= base:
                # The section ends at a dedent. Text that follows section text with no blank line
                # in between, and is no new section, is a continuation that lost its indentation.
                if j == last + 1 and SECTION.match(line) is None:
                    problems.append(
                        f"line {j + 1}: {text!r} follows the {name} section without a blank line "
                        "but is not indented under it (a continuation line that lost its "
                        "indentation?)"
                    )
                break
            if body_indent is None:
                body_indent = indent
            if indent < body_indent:
                problems.append(
                    f"line {j + 1}: {text!r} in the {name} section is indented less than the "
                    "section's first line"
                )
            elif indent == body_indent and name in ENTRY_SECTIONS:
                entry = ENTRY.match(text)
                if entry is None:
                    problems.append(
                        f"line {j + 1}: {text!r} is at the indentation of the {name} entries but "
                        "is no 'name: description' entry (a continuation line that lost its "
                        "indentation?)"
                    )
                else:
                    entries.append(entry["name"].lstrip("*"))
            last = j
            j += 1
        if body_indent is None:
            problems.append(f"line {i + 1}: the {name} section is empty")
        sections.append(Section(name, tuple(entries)))
        i = j
    return sections, problems


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    args = node.args
    names = {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]}
    names |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
    return names - {"self", "cls"}


def docstring_problems(source: str) -> list[str]:
    """Every layout problem of every docstring in a module's source, and Args entries that name
    no parameter of the function (or of ``__init__`` for a class docstring)."""
    tree = ast.parse(source)
    found: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        doc = ast.get_docstring(node, clean=True)
        if doc is None:
            continue
        where = getattr(node, "name", "<module>")
        line0 = node.body[0].lineno
        sections, problems = parse_google(doc)
        found += [f"{where} (docstring at line {line0}): {p}" for p in problems]
        params: set[str] | None = None
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            params = _parameters(node)
        elif isinstance(node, ast.ClassDef):
            inits = [
                n
                for n in node.body
                if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == "__init__"
            ]
            params = _parameters(inits[0]) if inits else None
        if params is None:
            continue
        for section in sections:
            if section.name not in ARG_SECTIONS:
                continue
            for name in section.entries:
                if name not in params:
                    found.append(
                        f"{where} (docstring at line {line0}): the {section.name} entry {name!r} "
                        f"is no parameter (parameters: {sorted(params)})"
                    )
    return found


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_google_sections_are_well_formed(path: Path) -> None:
    problems = docstring_problems(path.read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_public_api_renders_with_pydoc(module_name: str) -> None:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", [])
    assert names, module_name
    for name in names:
        obj = getattr(module, name)
        doc = getattr(obj, "__doc__", None)
        if not (callable(obj) or isinstance(obj, type)) or not doc:
            continue
        text = pydoc.render_doc(obj, renderer=pydoc.TextDoc())
        assert doc.strip().splitlines()[0] in text, name


@pytest.mark.parametrize("module_name", LIBRARY_MODULES)
def test_docstring_examples_run(module_name: str) -> None:
    module = importlib.import_module(module_name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    for test in doctest.DocTestFinder().find(module, module_name):
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


# ---------------------------------------------------------------------------------------------
# The checker itself: it must flag the broken forms and accept the correct ones.

GOOD = '''
def f(in_rep, out_rep, *args, **kwargs):
    """Summary.

    Args:
        in_rep: Representation of the input space, of a finite group, with orthogonal change
            of basis.
        out_rep (Representation): Of the same group.

            A second paragraph.
        *args: Passed on.
        **kwargs: Passed on.

    Returns:
        Tensor of shape ``(..., n)``,
        continued at the same indentation (one paragraph).

    Raises:
        ValueError: If it is wrong.
    """
'''

# The reflow damage found in this repository, in its three forms.
BROKEN_ARG_CONTINUATION = '''
def f(in_rep, out_rep):
    """Summary.

    Args:
        in_rep: Representation of the input space, of a finite group, with orthogonal change of
        basis.
        out_rep: Representation of the output space.
    """
'''
BROKEN_PAREN_CONTINUATION = '''
def f(rep, init_scheme):
    """Summary.

    Args:
        rep: The representation (e.g. copies of the regular representation, or of one
        irrep).
        init_scheme: A scheme.
    """
'''
BROKEN_RETURNS = '''
def f(x):
    """Summary.

    Returns:
        Tensor of shape ``(..., n)`` with ``ρ_out(g) W =
    W ρ_in(g)``.
    """
'''
WRONG_NAME = '''
class C:
    """Summary.

    Args:
        rep: A representation.
        hidden: Not a parameter of __init__.
    """

    def __init__(self, rep):
        pass
'''


def test_the_checker_accepts_well_formed_sections() -> None:
    assert docstring_problems(GOOD) == []
    function = ast.parse(GOOD).body[0]
    assert isinstance(function, ast.FunctionDef)
    sections, _ = parse_google(ast.get_docstring(function, clean=True) or "")
    assert [s.name for s in sections] == ["Args", "Returns", "Raises"]
    assert sections[0].entries == ("in_rep", "out_rep", "args", "kwargs")
    assert sections[2].entries == ("ValueError",)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (BROKEN_ARG_CONTINUATION, "'basis.' is at the indentation of the Args entries"),
        (BROKEN_PAREN_CONTINUATION, "'irrep).' is at the indentation of the Args entries"),
        (BROKEN_RETURNS, "'W ρ_in(g)``.' follows the Returns section without a blank line"),
        (WRONG_NAME, "the Args entry 'hidden' is no parameter"),
    ],
    ids=["arg-continuation", "paren-continuation", "returns-dedent", "unknown-argument"],
)
def test_the_checker_flags_broken_sections(source: str, expected: str) -> None:
    problems = docstring_problems(source)
    assert len(problems) == 1, problems
    assert expected in problems[0]
