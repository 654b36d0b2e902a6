#!/usr/bin/env bash
# Wheel smoke test: what a user of the published packages gets.
#
#     bash tools/wheel_smoke.sh
#
# Builds every workspace package (wheel + sdist), then installs each layer alone, from its wheel and
# with its declared dependencies only, into a fresh virtual environment outside the workspace:
#
#     ereps            (must not see elayers or eregressors)
#     ereps + elayers
#     ereps + elayers + eregressors
#
# In each environment it imports and uses the packages, checks that ereps works with escnn's install
# folder read-only (caches go to $EREPS_CACHE_DIR), and, in the full environment, type-checks the
# downstream samples of tests/typing/ with `mypy --strict` against the installed wheels.
#
# Our own packages are not on PyPI: the layer wheels are installed by path and their first-party
# dependencies (ereps, elayers, escnn-stubs) are found in the build folder (--find-links). Everything
# else comes from PyPI, as for a user.
#
# py3nj: escnn declares it, it has no wheels and its build needs a Fortran compiler, and the finite
# groups never use it. The workspace drops it with [tool.uv] override-dependencies, but overrides are
# not part of built wheels, so a user's installer still asks for it. We reproduce what a uv user does
# (an override file, below) and print the pip recipe.
#
# Environment: SMOKE_PYTHON picks the interpreter (default: the version of the workspace
# environment); SMOKE_KEEP=1 keeps the work folder.
# torch is large: uv installs it from its cache, by hard link where the cache and the work folder
# share a file system (UV_LINK_MODE, default hardlink on Linux), so each environment costs seconds.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Default interpreter: the Python version of the workspace environment (what `uv sync` chose).
workspace_python="$(uv python find --project "$repo" 2>/dev/null || true)"
if [[ -n "$workspace_python" ]]; then
    default_python="$("$workspace_python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
else
    default_python="3.11"
fi
python_request="${SMOKE_PYTHON:-$default_python}"
work="$(mktemp -d "${TMPDIR:-/tmp}/ereps-wheel-smoke.XXXXXX")"
start_time=$SECONDS

cleanup() {
    if [[ "${SMOKE_KEEP:-0}" == "1" ]]; then
        echo "work folder kept: $work"
        return
    fi
    # The escnn folders were made read-only: give write permission back so that they can be removed.
    chmod -R u+w "$work" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

step() {
    printf '\n==> [%4d s] %s\n' "$((SECONDS - start_time))" "$*"
}

fail() {
    echo "wheel smoke test FAILED: $*" >&2
    exit 1
}

dist="$work/dist"

step "build every workspace package into $dist (environments use Python $python_request)"
(cd "$repo" && uv build --all-packages --out-dir "$dist")
ls -l "$dist"

# The wheel of each of our distributions, by distribution name.
wheel_of() {
    local name="$1" matches
    matches=("$dist/${name//-/_}"-*.whl)
    [[ -f "${matches[0]}" ]] || fail "no wheel for $name in $dist"
    [[ ${#matches[@]} -eq 1 ]] || fail "several wheels for $name in $dist: ${matches[*]}"
    printf '%s\n' "${matches[0]}"
}

# Every uv command below runs from the work folder with --no-config: no workspace configuration
# (override-dependencies, sources) leaks into what a user would get.
cd "$work"

overrides="$work/overrides.txt"
printf '%s\n' "py3nj ; sys_platform == 'never'" >"$overrides"

cat <<'EOF'

How users install without a Fortran compiler (escnn requires py3nj, which only builds with one):
  uv:   printf '%s\n' "py3nj ; sys_platform == 'never'" > overrides.txt
        uv pip install --overrides overrides.txt eregressors        # or elayers, or ereps
  pip:  pip cannot drop a dependency, and `pip install ereps` fails while building py3nj
        ("meson ... ERROR: Unknown compiler(s): [['gfortran'], ...]"). Either install a Fortran
        compiler first (e.g. apt-get install gfortran), or install escnn without its dependencies:
        pip install "torch>=2.3" "numpy>=1.23,<2" scipy lie-learn joblib pymanopt autograd typing-extensions
        pip install --no-deps escnn
        pip install --no-deps escnn-stubs ereps elayers eregressors  # the layers you need
EOF

make_env() {
    local name="$1"
    shift
    local venv="$work/venv-$name"
    step "[$name] fresh environment, install: $*"
    uv venv --no-config --quiet --python "$python_request" "$venv"
    local wheels=()
    for package in "$@"; do
        wheels+=("$(wheel_of "$package")")
    done
    local t0=$SECONDS
    uv pip install --no-config --python "$venv/bin/python" \
        --find-links "$dist" --overrides "$overrides" "${wheels[@]}"
    echo "[$name] installed in $((SECONDS - t0)) s"
}

# Runs Python code in an environment, from the work folder (never from the repository).
py() {
    local name="$1"
    shift
    "$work/venv-$name/bin/python" "$@"
}

check_first_party_from_dist() {
    # Each of our distributions installed in the environment (the layers and what they pulled in,
    # e.g. escnn-stubs) must come from the wheels just built, never from an index.
    local name="$1" wheel package expected version
    for wheel in "$dist"/*.whl; do
        package="$(basename "$wheel" | cut -d- -f1)"
        expected="$(basename "$wheel" | cut -d- -f2)"
        version="$(py "$name" -c '
import sys
from importlib.metadata import PackageNotFoundError, version
try:
    print(version(sys.argv[1]))
except PackageNotFoundError:
    print("-")
' "$package")"
        if [[ "$version" == "-" ]]; then
            continue
        fi
        [[ "$version" == "$expected" ]] ||
            fail "[$name] $package $version is installed, but the built wheel is $expected"
        echo "[$name] $package $version: from the built wheel"
    done
}

check_not_importable() {
    local name="$1"
    shift
    local module
    for module in "$@"; do
        if py "$name" -c "import $module" 2>/dev/null; then
            fail "[$name] '$module' is importable but was not installed (an undeclared dependency?)"
        fi
        echo "[$name] '$module' is not importable, as expected"
    done
}

check_read_only_escnn() {
    # escnn writes memoized irreps into its own folder unless ereps redirects them. Make the folder
    # read-only (for root, which ignores permissions, also compare its listing before and after).
    local name="$1"
    local escnn_dir cache before after
    escnn_dir="$(py "$name" -c '
import importlib.util
import os

print(os.path.dirname(importlib.util.find_spec("escnn").origin))
')"
    cache="$work/cache-$name"
    # Compile first: a read-only folder cannot receive __pycache__, which is not what we test here.
    py "$name" -m compileall -q "$escnn_dir" >/dev/null 2>&1 || true
    before="$(find "$escnn_dir" | sort)"
    chmod -R a-w "$escnn_dir"
    EREPS_CACHE_DIR="$cache" py "$name" - <<'EOF'
import os
import sys

import ereps  # imports escnn with its caches pointed to EREPS_CACHE_DIR

group = ereps.octa_group()  # memoized irreps: the first build writes to the cache
print("octahedral group: order", group.order(), "irreps", [irrep.size for irrep in group.irreps()])
cache = os.environ["EREPS_CACHE_DIR"]
written = [os.path.join(root, f) for root, _, files in os.walk(cache) for f in files]
if not written:
    sys.exit(f"EREPS_CACHE_DIR={cache} received no cache file: the escnn caches were not redirected")
print(f"{len(written)} cache files under EREPS_CACHE_DIR; ereps {ereps.__name__} imported read-only")
EOF
    after="$(find "$escnn_dir" | sort)"
    if [[ "$before" != "$after" ]]; then
        comm -13 <(echo "$before") <(echo "$after") | head -20 >&2
        fail "[$name] files appeared in escnn's install folder (listed above)"
    fi
    echo "[$name] escnn's install folder is untouched"
}

# --- ereps alone ------------------------------------------------------------------------------
make_env ereps ereps
check_first_party_from_dist ereps
check_not_importable ereps elayers eregressors
py ereps - <<'EOF'
# Tiny usage of the installed wheel (extend as the API grows). Groups come from ereps, which
# imports escnn with its caches pointed to a writable folder.
import ereps

group = ereps.cyclic_group(4)
print("ereps", getattr(ereps, "__version__", "?"), "| C4 order", group.order())
if hasattr(ereps, "direct_sum"):
    rep = ereps.direct_sum([group.regular_representation, group.trivial_representation])
    print("direct_sum size", rep.size)
EOF
check_read_only_escnn ereps

# --- ereps + elayers --------------------------------------------------------------------------
make_env elayers elayers
check_first_party_from_dist elayers
check_not_importable elayers eregressors
py elayers - <<'EOF'
import ereps
import elayers

group = ereps.cyclic_group(4)
print("elayers", getattr(elayers, "__version__", "?"), "on ereps", getattr(ereps, "__version__", "?"))
if hasattr(elayers, "eLinear"):
    import torch

    layer = elayers.eLinear(group.regular_representation, group.regular_representation)
    print("eLinear output shape", tuple(layer(torch.randn(2, 4)).shape))
EOF

# --- ereps + elayers + eregressors ------------------------------------------------------------
make_env eregressors eregressors
check_first_party_from_dist eregressors
py eregressors - <<'EOF'
import ereps
import elayers
import eregressors

print(
    "eregressors", getattr(eregressors, "__version__", "?"),
    "| public names:", sorted(getattr(eregressors, "__all__", [])),
)
EOF

# --- a downstream user's type check against the installed wheels -----------------------------
typing_samples=("$repo"/tests/typing/*_sample.py)
if [[ -f "${typing_samples[0]}" ]]; then
    step "[eregressors] mypy --strict on the downstream samples of tests/typing/"
    uv pip install --no-config --python "$work/venv-eregressors/bin/python" --quiet "mypy>=1.13"
    mkdir -p "$work/downstream"
    cp "${typing_samples[@]}" "$work/downstream/"
    rm -f "$work/downstream/__init__.py"
    printf '[mypy]\n' >"$work/downstream/mypy.ini"
    # Run from the copy, away from the repository and its configuration: only the wheels are seen.
    (cd "$work/downstream" && "$work/venv-eregressors/bin/python" -m mypy --strict \
        --no-incremental --config-file mypy.ini ./*.py)
else
    echo "no downstream typing samples in tests/typing/ yet: skipping the downstream mypy check"
fi

echo
echo "wheel smoke test passed in $((SECONDS - start_time)) s"
