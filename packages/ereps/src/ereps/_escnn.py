"""The one place where ``escnn`` is imported.

escnn memoizes expensive irrep constructions with :class:`joblib.Memory` objects that are created
at import time inside escnn's own install folder (``escnn/group/_cache``). That breaks read-only
installs (system site-packages, containers, Nix) and mixes caches of different environments. We
import escnn with :class:`joblib.Memory` temporarily replaced by a factory that points every cache
escnn creates to a user-writable folder instead:

* ``$EREPS_CACHE_DIR`` when set,
* otherwise ``$XDG_CACHE_HOME/ereps/escnn``, falling back to ``~/.cache/ereps/escnn``.

If escnn was already imported before ereps, its memoized functions are rebound to the same folder.

Two more things happen in front of escnn here:

* ``lie_learn``: escnn imports ``lie_learn.representations.SO3.wigner_d`` at import time, and
  lie-learn has wheels only for Python 3.10-3.12 built against numpy 1. When it cannot be imported
  (not installed, or compiled for another numpy), ereps registers its own implementation of the
  one function escnn uses (:mod:`ereps._wigner`) before importing escnn. When the real package
  loads, escnn uses it.
* Cold caches: on a cache miss escnn restricts octahedral/icosahedral representations numerically
  (``escnn.group._numerical.find_orthogonal_matrix``), silencing its optimizer by replacing
  ``sys.stdout`` with ``open(os.devnull, "w")``, a file it never closes (a ``ResourceWarning``,
  an error under ``-W error``). ereps wraps that function: it runs in escnn's verbose mode (which
  opens no file) with its output captured in memory and sent to the debug log.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib  # type: ignore[import-untyped]

from ereps._wigner import install_lie_learn_shim

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = "EREPS_CACHE_DIR"

# Modules of escnn that create a joblib.Memory at import time.
_MEMOIZING_MODULES = (
    "escnn.group.irrep",
    "escnn.group.groups.octa",
    "escnn.group.groups.ico",
    "escnn.group.groups._numerical_thomson",
    "escnn.group._clebsh_gordan",
)


def cache_dir() -> Path:
    """Return the folder where escnn's memoized group data is stored.

    Returns:
        ``$EREPS_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/ereps/escnn`` or
        ``~/.cache/ereps/escnn``.
    """
    explicit = os.environ.get(CACHE_ENV_VAR)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "ereps" / "escnn"


def _redirected_memory_factory(original: type[joblib.Memory]) -> Any:
    target = str(cache_dir())

    def factory(location: Any = None, *args: Any, **kwargs: Any) -> joblib.Memory:
        # Only escnn creates Memory objects while the factory is installed; send them all to our
        # folder. escnn asks some caches to print progress; keep the library quiet (progress goes
        # to logging).
        kwargs["verbose"] = 0
        return original(target, *args, **kwargs)

    return factory


_WIGNER_MODULE = "lie_learn.representations.SO3.wigner_d"


def _lie_learn_loads() -> bool:
    """Whether the real ``lie_learn`` (the part escnn imports) imports with the numpy present."""
    if _WIGNER_MODULE in sys.modules:
        return True  # already imported (the real package, or our replacement)
    # A build for numpy 1 under numpy 2 prints a long explanation to stderr before it fails.
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module(_WIGNER_MODULE)
    except Exception as exc:  # ImportError, or e.g. AttributeError of a numpy-1 build
        logger.debug(
            "lie_learn does not load (%s: %s%s); using ereps' wigner_D_matrix instead",
            type(exc).__name__,
            exc,
            f"; stderr: {stderr.getvalue().strip()}" if stderr.getvalue().strip() else "",
        )
        return False
    return True


def _quiet_find_orthogonal_matrix(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap escnn's ``find_orthogonal_matrix`` so that it leaves no file open (see above)."""
    if getattr(original, "__ereps_wrapped__", False):
        return original

    @functools.wraps(original)
    def find_orthogonal_matrix(basis: Any, shape: Any, verbose: bool = False) -> Any:
        captured = io.StringIO()
        # verbose=True: escnn then leaves sys.stdout alone instead of opening os.devnull.
        with contextlib.redirect_stdout(captured):
            result = original(basis, shape, verbose=True)
        output = captured.getvalue()
        if verbose:
            sys.stdout.write(output)
        elif output.strip():
            logger.debug("escnn find_orthogonal_matrix: %s", output.strip())
        return result

    find_orthogonal_matrix.__ereps_wrapped__ = True  # type: ignore[attr-defined]
    return find_orthogonal_matrix


def _patch_numerical() -> None:
    numerical: Any = importlib.import_module("escnn.group._numerical")
    numerical.find_orthogonal_matrix = _quiet_find_orthogonal_matrix(
        numerical.find_orthogonal_matrix
    )


def _import_escnn_group() -> Any:
    if "escnn.group" in sys.modules:
        _rebind_loaded_escnn()
        _patch_numerical()
        return sys.modules["escnn.group"]
    if not _lie_learn_loads():
        install_lie_learn_shim()
    original = joblib.Memory
    joblib.Memory = _redirected_memory_factory(original)
    try:
        with warnings.catch_warnings():
            # escnn warns at import that py3nj (only needed for SO(3)) is missing.
            warnings.filterwarnings("ignore", message=".*py3nj.*", category=UserWarning)
            # escnn/group/homspace.py has an invalid escape sequence in a docstring: compiling it
            # (no .pyc yet) warns, and under -W error the import would fail with a SyntaxError.
            for category in (DeprecationWarning, SyntaxWarning):
                warnings.filterwarnings(
                    "ignore",
                    message="invalid escape sequence",
                    category=category,
                    module=r".*[/\\]escnn[/\\]",
                )
            module = importlib.import_module("escnn.group")
            for name in _MEMOIZING_MODULES:
                importlib.import_module(name)
    finally:
        joblib.Memory = original
    _patch_numerical()
    return module


def _rebind_loaded_escnn() -> None:
    """Point the memoized functions of an already imported escnn to our cache folder."""
    memory = joblib.Memory(str(cache_dir()), verbose=0)
    for name in _MEMOIZING_MODULES:
        module = sys.modules.get(name)
        if module is None:
            continue
        for attr, value in list(vars(module).items()):
            if isinstance(value, joblib.memory.MemorizedFunc):
                setattr(module, attr, memory.cache(value.func, ignore=value.ignore))
        module.cache = memory  # type: ignore[attr-defined]
    logger.debug("escnn was imported before ereps; its caches now live in %s", cache_dir())


# The escnn.group module (untyped): for the few functions ereps reaches that the stubs do not cover.
escnn_group: Any = _import_escnn_group()

# The group constructors are re-exported so that users and tools build groups from ereps, which
# imports escnn with its caches redirected, and never need to import escnn themselves.
from escnn.group import (  # noqa: E402
    Group,
    GroupElement,
    IrreducibleRepresentation,
    Representation,
    cyclic_group,
    dihedral_group,
    direct_product,
    directsum,
    full_ico_group,
    full_octa_group,
    ico_group,
    octa_group,
)

__all__ = [
    "CACHE_ENV_VAR",
    "Group",
    "GroupElement",
    "IrreducibleRepresentation",
    "Representation",
    "cache_dir",
    "cyclic_group",
    "dihedral_group",
    "direct_product",
    "directsum",
    "escnn_group",
    "full_ico_group",
    "full_octa_group",
    "ico_group",
    "octa_group",
]
