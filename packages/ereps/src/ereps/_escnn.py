"""The one place where ``escnn`` is imported.

escnn memoizes expensive irrep constructions with :class:`joblib.Memory` objects that are created
at import time inside escnn's own install folder (``escnn/group/_cache``). That breaks read-only
installs (system site-packages, containers, Nix) and mixes caches of different environments. We
import escnn with :class:`joblib.Memory` temporarily replaced by a factory that points every cache
escnn creates to a user-writable folder instead:

* ``$EREPS_CACHE_DIR`` when set,
* otherwise ``$XDG_CACHE_HOME/ereps/escnn``, falling back to ``~/.cache/ereps/escnn``.

If escnn was already imported before ereps, its memoized functions are rebound to the same folder.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import joblib  # type: ignore[import-untyped]

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


def _import_escnn_group() -> Any:
    if "escnn.group" in sys.modules:
        _rebind_loaded_escnn()
        return sys.modules["escnn.group"]
    original = joblib.Memory
    joblib.Memory = _redirected_memory_factory(original)
    try:
        with warnings.catch_warnings():
            # escnn warns at import that py3nj (only needed for SO(3)) is missing.
            warnings.filterwarnings("ignore", message=".*py3nj.*", category=UserWarning)
            module = importlib.import_module("escnn.group")
            for name in _MEMOIZING_MODULES:
                importlib.import_module(name)
    finally:
        joblib.Memory = original
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


_import_escnn_group()

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
    "full_ico_group",
    "full_octa_group",
    "ico_group",
    "octa_group",
]
