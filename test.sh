#!/usr/bin/env bash
# The tests: the whole suite, docstring examples included, under TensorFlow,
# JAX and torch, one process per backend (KERAS_BACKEND is fixed when keras
# is imported). Fails if any backend fails or collects no test.
#   ./test.sh                 # default suite (slow reproduction checks excluded)
#   ./test.sh --slow          # only the slow reproduction checks
#   BACKENDS="jax" ./test.sh tests/training -x   # a subset, extra pytest args
source "$(dirname "$0")/scripts/venv.sh"
cd "$ROOT"
MARK=()
if [ "${1:-}" = "--slow" ]; then shift; MARK=(-m slow); fi
failed=()
for backend in ${BACKENDS:-tensorflow jax torch}; do
    echo "===== KERAS_BACKEND=$backend ====="
    start=$SECONDS
    status=0
    KERAS_BACKEND=$backend "$PY" -m pytest -q "${MARK[@]}" "$@" || status=$?
    # Exit 5 means no test was collected: a selection that runs nothing
    # (e.g. --slow with every slow check removed) must not count as a pass.
    if [ "$status" -ne 0 ]; then failed+=("$backend"); fi
    echo "===== $backend: exit $status in $((SECONDS - start)) s ====="
done
if [ "${#failed[@]}" -ne 0 ]; then
    echo "FAILED backends: ${failed[*]}"
    exit 1
fi
echo "all backends passed"
