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
# py3nj and lie-learn: escnn declares both. py3nj has no wheels and its build needs a Fortran
# compiler; the finite groups never use it. lie-learn has wheels only for Python 3.10-3.12, built
# against numpy 1 (it pins numpy<2); escnn imports one function of it, which ereps provides when
# lie-learn is absent. The workspace drops both with [tool.uv] override-dependencies, but overrides
# are not part of built wheels, so a user's installer still asks for them. We reproduce the README's
# recipes: uv with an override file (every Python version, numpy 2), and plain pip (escnn without
# its dependencies), also with numpy 1 and the real lie-learn where lie-learn has wheels.
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
printf '%s\n' "py3nj ; sys_platform == 'never'" "lie-learn ; sys_platform == 'never'" >"$overrides"

cat <<'EOF'

How users install (the README's recipes; escnn requires py3nj, which needs a Fortran compiler, and
lie-learn, which has wheels for Python 3.10-3.12 only and pins numpy<2):
  uv:   printf '%s\n' "py3nj ; sys_platform == 'never'" "lie-learn ; sys_platform == 'never'" > overrides.txt
        uv pip install --overrides overrides.txt eregressors        # or elayers, or ereps
  pip:  pip install "torch>=2.3" "numpy>=1.23" scipy joblib pymanopt autograd typing-extensions
        pip install --no-deps escnn
        pip install --no-deps escnn-stubs ereps elayers eregressors  # the layers you need
        (Python 3.10-3.12, numpy 1: add "numpy<2" lie-learn to the first line to use the real lie-learn)
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

check_models() {
    # The octahedral and icosahedral models, built and checked for equivariance; a whole-model
    # pickle round trip. Prints whether escnn runs on the real lie_learn or on ereps' replacement.
    local name="$1"
    step "[$name] octahedral and icosahedral models: equivariance, pickle round trip"
    # One cache for all environments: the first builds the groups cold, the others reuse it.
    EREPS_CACHE_DIR="$work/cache-models" py "$name" - <<'EOF'
import pickle
import sys

import numpy
import torch

import ereps
import escnn.group as eg
import lie_learn
from eregressors import eCondTransformerRegressor

which = "ereps' replacement" if getattr(lie_learn, "__ereps_shim__", False) else "the real lie_learn"
print(f"Python {sys.version.split()[0]}, numpy {numpy.__version__}, escnn on {which}")
torch.manual_seed(0)
for group in (eg.octa_group(), eg.ico_group()):
    standard = group.standard_representation
    model = eCondTransformerRegressor(
        standard, standard, standard, 4, 2, 1, 2, 2 * group.order()
    ).double().eval()
    err = model.check_equivariance(elements=list(group.generators))
    if not err < 1e-10:
        sys.exit(f"{group.name}: equivariance error {err:.2e}")
    X, Z = torch.randn(2, 4, 3, dtype=torch.float64), torch.randn(2, 2, 3, dtype=torch.float64)
    step = torch.tensor([1.0, 500.0], dtype=torch.float64)
    loaded = pickle.loads(pickle.dumps(model))
    if not torch.equal(loaded(X, step, Z), model(X, step, Z)):
        sys.exit(f"{group.name}: the unpickled model computes something else")
    print(f"{group.name}: equivariance error {err:.1e}, pickle round trip equal")
EOF
}

make_pip_env() {
    # The README's plain-pip recipe, verbatim but for our wheels (from the build folder) and torch,
    # which is put in from uv's cache first: pip would download the same wheel (~5 GB with its
    # CUDA libraries); pip then finds the requirement satisfied.
    local name="$1"
    shift
    local venv="$work/venv-$name"
    step "[$name] fresh environment with pip: $*"
    uv venv --no-config --quiet --seed --python "$python_request" "$venv"
    uv pip install --no-config --quiet --python "$venv/bin/python" "torch>=2.3"
    local t0=$SECONDS
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "torch>=2.3" "$@" \
        scipy joblib pymanopt autograd typing-extensions
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps escnn
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
        "$(wheel_of escnn-stubs)" "$(wheel_of ereps)" "$(wheel_of elayers)" "$(wheel_of eregressors)"
    echo "[$name] installed with pip in $((SECONDS - t0)) s"
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
check_models eregressors

# --- the plain-pip recipe ---------------------------------------------------------------------
# Python 3.10-3.12: numpy 1 with the real lie-learn (its wheels pin numpy<2); 3.13+: numpy 2, no
# lie-learn (ereps' replacement). The uv environments above cover numpy 2 on every version.
pip_python_minor="$("$work/venv-eregressors/bin/python" -c 'import sys; print(sys.version_info[1])')"
if ((pip_python_minor <= 12)); then
    make_pip_env pip "numpy>=1.23,<2" lie-learn
else
    make_pip_env pip "numpy>=1.23"
fi
check_first_party_from_dist pip
check_models pip

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
