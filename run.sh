#!/usr/bin/env bash
# The main job: run a bundled experiment and print its results.
#   ./run.sh                                  # default experiment on JAX
#   ./run.sh run synthetic-multitask --backend torch --epochs 5
#   ./run.sh list
source "$(dirname "$0")/scripts/venv.sh"
cd "$ROOT"
if [ "$#" -eq 0 ]; then set -- run --backend jax; fi
exec "$PY" -m zoo "$@"
