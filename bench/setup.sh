#!/usr/bin/env bash
# Create or update bench/.venv with this repo (editable) and matrix-synapse from PyPI, in one
# interpreter, so benchmarks can run our code and Synapse's side by side. Idempotent: installs are
# skipped when the packages are already importable. Reused by every benchmark under bench/.
#
#   bash bench/setup.sh              # create/update
#   SYNAPSE_VERSION=1.163.2 bash bench/setup.sh   # pin a Synapse version (default: newest)
#   PYTHON=python3.12 bash bench/setup.sh         # pick the interpreter for a new venv
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$BENCH_DIR/.." && pwd)"
VENV="$BENCH_DIR/.venv"
PYTHON="${PYTHON:-python3}"
PY="$VENV/bin/python"

if [[ ! -x "$PY" ]]; then
    echo "setup: creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
    "$PY" -m pip install --quiet --upgrade pip
fi

# Our homeserver, editable, so the bench always sees the working tree. Re-run the install only when
# pyproject.toml changed since the last one (its dependencies may have moved).
stamp="$VENV/.homeserver-pyproject.sha256"
want="$(sha256sum "$REPO_ROOT/pyproject.toml" | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [[ "$want" != "$have" ]] || ! "$PY" -c 'import homeserver' 2>/dev/null; then
    echo "setup: installing homeserver (editable) from $REPO_ROOT"
    "$PY" -m pip install --quiet -e "$REPO_ROOT"
    echo "$want" > "$stamp"
fi

# Synapse, the reference implementation, from PyPI.
synapse_spec="matrix-synapse${SYNAPSE_VERSION:+==$SYNAPSE_VERSION}"
installed="$("$PY" -c 'import importlib.metadata as m; print(m.version("matrix-synapse"))' 2>/dev/null || true)"
if [[ -z "$installed" ]] || [[ -n "${SYNAPSE_VERSION:-}" && "$installed" != "$SYNAPSE_VERSION" ]]; then
    echo "setup: installing $synapse_spec"
    "$PY" -m pip install --quiet "$synapse_spec"
    installed="$("$PY" -c 'import importlib.metadata as m; print(m.version("matrix-synapse"))')"
fi

echo "setup: ready: $PY (homeserver editable, matrix-synapse $installed)"
