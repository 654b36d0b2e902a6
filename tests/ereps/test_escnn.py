"""The escnn import layer: re-exports and the redirection of escnn's on-disk caches."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import escnn
import pytest

import ereps
from ereps import CACHE_ENV_VAR, cache_dir

# escnn's own cache folder inside its install (where escnn writes without ereps).
ESCNN_CACHE = Path(escnn.__file__).parent / "group" / "_cache"
# The group constructors ereps re-exports, so that nobody needs to import escnn first.
CONSTRUCTORS = (
    "cyclic_group",
    "dihedral_group",
    "octa_group",
    "ico_group",
    "full_octa_group",
    "full_ico_group",
    "direct_product",
)
OCTA_FUNC = Path("joblib", "escnn", "group", "groups", "octa", "_build_octa_irrep_picklable")


def test_cache_dir_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv(CACHE_ENV_VAR)
    assert cache_dir() == tmp_path / "xdg" / "ereps" / "escnn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "ereps" / "escnn"
    monkeypatch.setenv(CACHE_ENV_VAR, "~/elsewhere")
    assert cache_dir() == tmp_path / "home" / "elsewhere"
    assert CACHE_ENV_VAR == "EREPS_CACHE_DIR"


def test_memoized_functions_of_this_process_use_the_cache_dir() -> None:
    import escnn.group.groups.ico as ico
    import escnn.group.groups.octa as octa
    import escnn.group.irrep as irrep

    expected = str(cache_dir())
    funcs = [
        getattr(octa, "_build_octa_irrep_picklable"),  # noqa: B009 - private, not in the stubs
        getattr(ico, "_build_ico_irrep_picklable"),  # noqa: B009
        getattr(irrep, "_restrict_irrep"),  # noqa: B009
    ]
    for func in funcs:
        assert type(func).__name__ == "MemorizedFunc", func
        location = str(func.store_backend.location)
        assert location.startswith(expected), (func, location)
        assert not location.startswith(str(ESCNN_CACHE))


def _snapshot(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


@pytest.fixture(scope="module")
def fresh_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[Path]]:
    """Build the octahedral group in a fresh interpreter (ereps imported first, as users do) with
    an empty cache folder; return that folder and the files that appeared in escnn's own folder.
    """
    folder = tmp_path_factory.mktemp("ereps_cache")
    before = _snapshot(ESCNN_CACHE)
    env = dict(os.environ)
    env[CACHE_ENV_VAR] = str(folder)
    script = "import ereps, escnn.group as g; g.octa_group()"
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return folder, _snapshot(ESCNN_CACHE) - before


@pytest.mark.slow
def test_fresh_process_writes_its_cache_to_the_env_folder(
    fresh_cache: tuple[Path, set[Path]],
) -> None:
    folder = fresh_cache[0] / OCTA_FUNC
    assert folder.is_dir()
    assert list(folder.rglob("output.pkl")), f"no memoized output under {folder}"


@pytest.mark.slow
def test_fresh_process_writes_nothing_into_escnns_install_folder(
    fresh_cache: tuple[Path, set[Path]],
) -> None:
    assert not fresh_cache[1], sorted(fresh_cache[1])


def test_rebinding_an_escnn_imported_before_ereps(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # What happens when a user imports escnn before ereps: escnn's memoized functions already exist
    # and are rebound to the cache folder. Exercised here in-process on a fresh folder, then undone.
    import escnn.group.groups.octa as octa
    import escnn.group.irrep as irrep

    from ereps import _escnn

    names = [(octa, "_build_octa_irrep_picklable"), (irrep, "_restrict_irrep")]
    originals = [getattr(module, name) for module, name in names]
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    try:
        _escnn._rebind_loaded_escnn()
        for (module, name), original in zip(names, originals, strict=True):
            rebound = getattr(module, name)
            assert type(rebound).__name__ == "MemorizedFunc"
            assert rebound.func is original.func  # the same computation ...
            assert rebound.ignore == original.ignore
            # ... memoized under the new folder.
            assert str(rebound.store_backend.location) == str(tmp_path / "joblib")
        assert str(getattr(octa, "cache").location) == str(tmp_path)  # noqa: B009
    finally:
        monkeypatch.undo()
        _escnn._rebind_loaded_escnn()
    for module, name in names:
        location = str(getattr(module, name).store_backend.location)
        assert location == str(cache_dir() / "joblib")


def test_reexports_are_escnns_classes() -> None:
    import escnn.group as eg

    assert ereps.Representation is eg.Representation
    assert ereps.Group is eg.Group
    assert ereps.GroupElement is eg.GroupElement
    assert ereps.IrreducibleRepresentation is eg.IrreducibleRepresentation


# Prints where escnn's memoized functions store their results, once ereps and escnn are imported
# in the order given by the first line (a placeholder filled in by the test).
_IMPORT_ORDER_SCRIPT = """
{first_import}
import json

import escnn.group
import escnn.group.groups.ico as ico
import escnn.group.groups.octa as octa
import escnn.group.irrep as irrep

import ereps

memoized = [octa._build_octa_irrep_picklable, ico._build_ico_irrep_picklable, irrep._restrict_irrep]
print(json.dumps({{
    "locations": [str(f.store_backend.location) for f in memoized],
    "module_caches": [str(m.cache.location) for m in (octa, ico, irrep)],
    "cache_dir": str(ereps.cache_dir()),
    "constructors": [
        getattr(ereps, name) is getattr(escnn.group, name)
        for name in {constructors!r}
    ],
    "group": ereps.dihedral_group(4) is escnn.group.dihedral_group(4),
}}))
"""


# escnn imported first needs the real lie_learn (the uv override drops it; ereps' stand-in is
# installed only when ereps is imported), so that order is checked only where it is installed.
def _lie_learn_installed() -> bool:
    # The distribution, not the import: ereps' stand-in may already sit in sys.modules.
    try:
        importlib.metadata.version("lie-learn")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


_LIE_LEARN = _lie_learn_installed()


@pytest.mark.parametrize(
    "first_import",
    [
        "import ereps",
        pytest.param(
            "import escnn",
            marks=pytest.mark.skipif(not _LIE_LEARN, reason="lie_learn is not installed"),
        ),
    ],
)
def test_import_order_does_not_matter(first_import: str, tmp_path: Path) -> None:
    # A fresh interpreter per order: in this process both are imported already.
    env = dict(os.environ)
    env[CACHE_ENV_VAR] = str(tmp_path)
    script = _IMPORT_ORDER_SCRIPT.format(first_import=first_import, constructors=CONSTRUCTORS)
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["cache_dir"] == str(tmp_path)
    assert report["locations"] == [str(tmp_path / "joblib")] * 3
    assert report["module_caches"] == [str(tmp_path)] * 3
    assert report["constructors"] == [True] * len(CONSTRUCTORS)
    assert report["group"]


def test_group_constructors_are_escnns() -> None:
    import escnn.group as eg

    assert ereps.cyclic_group(3) is eg.cyclic_group(3)
    assert ereps.dihedral_group(3) is eg.dihedral_group(3)
    for name in CONSTRUCTORS:
        assert name in ereps.__all__
        assert getattr(ereps, name) is getattr(eg, name)
