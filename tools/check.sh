#!/usr/bin/env bash
# The project's one test command (the README points here):
#
#     bash tools/check.sh [pytest arguments...]
#
# Runs, in order, stopping at the first failure: ruff (lint, then format check), mypy --strict,
# the layering contracts (import-linter), actionlint on the workflows, then pytest. Extra
# arguments go to pytest, e.g. `bash tools/check.sh -x -k hom_basis` or `bash tools/check.sh -m "not slow"`.
# Works from any directory. Set CHECK_NO_SYNC=1 to use the environment as it is (no `uv sync`).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# `uv run` syncs the workspace environment first unless told not to.
uv_run=(uv run)
if [[ "${CHECK_NO_SYNC:-0}" == "1" ]]; then
    uv_run=(uv run --no-sync)
fi

step() {
    printf '\n==> %s\n' "$*"
}

step "ruff check"
"${uv_run[@]}" ruff check .

step "ruff format --check"
"${uv_run[@]}" ruff format --check .

# Paths are explicit so that this command does not depend on [tool.mypy] `files`; the strictness
# and the stub settings come from [tool.mypy] in pyproject.toml.
# (tests/ and tools/ are skipped while they hold no Python file: mypy rejects such a directory.)
step "mypy --strict"
mypy_paths=(packages/ereps/src packages/elayers/src packages/eregressors/src)
for dir in tests tools; do
    if [[ -n "$(find "$dir" -name '*.py' -print -quit)" ]]; then
        mypy_paths+=("$dir")
    fi
done
"${uv_run[@]}" mypy --strict "${mypy_paths[@]}"

step "lint-imports (layering: eregressors > elayers > ereps)"
"${uv_run[@]}" lint-imports

step "actionlint"
"${uv_run[@]}" actionlint

step "pytest"
# pytest exits with 5 when it collects nothing; an empty test tree is only acceptable while no
# test file exists at all, so that a broken collection can never pass silently.
if [[ -z "$(find tests -name 'test_*.py' -print -quit)" ]]; then
    echo "no test files under tests/ yet: skipping pytest"
else
    "${uv_run[@]}" pytest "$@"
fi

printf '\nAll checks passed.\n'
