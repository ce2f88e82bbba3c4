#!/usr/bin/env bash
# The main job: run a bundled experiment and print its results (default:
# the hyperteacher comparison of modular hypernetworks, ANIL and MAML).
#   ./run.sh                                  # default experiment on JAX
#   ./run.sh run hyperteacher --backend torch --models linear-hnet,anil
#   ./run.sh run synthetic-multitask --backend torch --epochs 5
#   ./run.sh list
source "$(dirname "$0")/scripts/venv.sh"
cd "$ROOT"
if [ "$#" -eq 0 ]; then set -- run --backend jax; fi
exec "$PY" -m zoo "$@"
