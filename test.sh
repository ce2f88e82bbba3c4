#!/usr/bin/env bash
# The tests: the whole suite under TensorFlow, JAX and torch, one process per
# backend (KERAS_BACKEND is fixed when keras is imported). Fails if any fails.
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
    KERAS_BACKEND=$backend "$PY" -m pytest -q "${MARK[@]}" "$@" || status=$?
    status=${status:-0}
    # pytest exits 5 when nothing was collected (e.g. no slow tests yet).
    if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then failed+=("$backend"); fi
    echo "===== $backend: exit $status in $((SECONDS - start)) s ====="
    unset status
done
if [ "${#failed[@]}" -ne 0 ]; then
    echo "FAILED backends: ${failed[*]}"
    exit 1
fi
echo "all backends passed"
