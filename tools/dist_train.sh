#!/usr/bin/env bash
# Distributed training with torchrun, on one or many nodes (GPU or CPU-only hosts).
#   tools/dist_train.sh CONFIG NPROC_PER_NODE [train.py args...]
# Environment: NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1), PORT (29500), PYTHON (the installer's .venv when it exists and no venv is active, else python)
set -euo pipefail
if [ "$#" -lt 2 ]; then
  echo "usage: $0 CONFIG NPROC_PER_NODE [train.py args...]" >&2; exit 2
fi
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONFIG=$1
NPROC=$2
shift 2
exec "$DIR/_torchrun.sh" "$DIR/train.py" "$NPROC" "$CONFIG" "$@"
