# Sourced by run.sh and test.sh: create or reuse ./.venv with every extra.
# torch is pinned to the CPU wheel first (an unpinned torch pulls several GB
# of CUDA packages); the rest comes from pyproject.toml's [all] extra.
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
STAMP="$VENV/.modular-zoo-installed"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/venv.sh" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$PY" ]; then
    echo "[setup] creating $VENV" >&2
    python3 -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
    echo "[setup] installing modular-zoo[all] into $VENV (first run takes a few minutes)" >&2
    "$PY" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" >&2 || true
    "$PY" -m pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" >&2 || true
    "$PY" -m pip install -q -e "$ROOT[all]" 2>&1 | grep -v "^WARNING: Location" >&2 || true
    "$PY" -c "import keras, jax, tensorflow, torch, keras_hub" \
        || { echo "[setup] install failed" >&2; exit 1; }
    echo "$WANT" > "$STAMP"
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
