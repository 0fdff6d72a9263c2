#!/usr/bin/env bash
# Distributed testing with torchrun, on one or many nodes (GPU or CPU-only hosts).
#   tools/dist_test.sh CONFIG CHECKPOINT NPROC_PER_NODE [test.py args...]
# Environment: NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1), PORT (29500), PYTHON (the installer's .venv when it exists and no venv is active, else python)
set -euo pipefail
if [ "$#" -lt 3 ]; then
  echo "usage: $0 CONFIG CHECKPOINT NPROC_PER_NODE [test.py args...]" >&2; exit 2
fi
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
shift 3
exec "$DIR/_torchrun.sh" "$DIR/test.py" "$NPROC" "$CONFIG" "$CHECKPOINT" "$@"
