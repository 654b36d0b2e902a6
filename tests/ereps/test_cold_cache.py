"""A machine that has never built the octahedral/icosahedral groups: nothing may leak.

escnn restricts their representations numerically on a cache miss and, unwrapped, leaves
``/dev/null`` open (a ``ResourceWarning``). Each case runs in a fresh interpreter under ``-W error``
with an empty ``EREPS_CACHE_DIR``, and records every unraisable exception (a ``ResourceWarning``
raised by a finalizer is one) instead of letting it be printed and ignored.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_SCRIPT = textwrap.dedent(
    """
    import gc
    import os
    import sys

    problems = []
    sys.unraisablehook = lambda u: problems.append(f"{u.exc_type.__name__}: {u.exc_value}")

    import ereps
    import escnn.group as eg
    import escnn.group._numerical as numerical

    if sys.argv[1] == "unwrapped":  # the control: escnn's own function, to show the test bites
        numerical.find_orthogonal_matrix = numerical.find_orthogonal_matrix.__wrapped__

    restricted = []
    if "O" in sys.argv[2]:
        octa = eg.octa_group()
        restricted.append(octa.restrict_representation((False, 4), octa.irrep(1)))  # O -> C4
        restricted.append(octa.restrict_representation((False, 3), octa.irrep(2)))  # O -> C3
    if "I" in sys.argv[2]:
        ico = eg.ico_group()
        restricted.append(ico.restrict_representation((False, 5), ico.irrep(1)))  # I -> C5
        restricted.append(ico.restrict_representation((False, 3), ico.irrep(2)))  # I -> C3
    assert all(r.size > 0 for r in restricted)
    gc.collect()
    files = [f for root, _, fs in os.walk(os.environ["EREPS_CACHE_DIR"]) for f in fs]
    assert files, "nothing was written to EREPS_CACHE_DIR: the cache was not cold"
    if problems:
        sys.exit("leaked: " + "; ".join(problems))
    print("clean", len(files))
    """
)


# The one warning the project's pytest configuration also ignores that these calls can raise:
# scipy 1.18 deprecates block_diag's sparse-matrix output, called by escnn's representation.py and
# (on a cold cache) _numerical.py and group.py. -W takes a literal module name: one per module.
_SCIPY_118 = [
    f"-Wignore:`block_diag` is switching to the sparse array interface:DeprecationWarning:{module}"
    for module in ("escnn.group.representation", "escnn.group._numerical", "escnn.group.group")
]


def _run(mode: str, groups: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, EREPS_CACHE_DIR=str(cache), PYTHONWARNINGS="")
    return subprocess.run(
        [sys.executable, "-W", "error", *_SCIPY_118, "-c", _SCRIPT, mode, groups],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.slow
def test_cold_restrictions_leak_nothing_under_w_error(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert not cache.exists()
    done = _run("wrapped", "OI", cache)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ResourceWarning" not in done.stderr
    assert done.stdout.startswith("clean")


@pytest.mark.slow
def test_escnn_unwrapped_leaks_on_a_cold_cache(tmp_path: Path) -> None:
    # The control: without ereps' wrapper the same script fails (on O alone, the cheaper group),
    # so the test above can fail.
    done = _run("unwrapped", "O", tmp_path / "cache")
    assert done.returncode != 0
    assert "ResourceWarning" in done.stdout + done.stderr
