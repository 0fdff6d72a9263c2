#!/usr/bin/env bash
# torchrun SCRIPT on NPROC_PER_NODE processes of this node; used by dist_train.sh/dist_test.sh.
#   tools/_torchrun.sh SCRIPT NPROC_PER_NODE [script args...]
# Environment: NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1), PORT (29500), PYTHON (the installer's .venv when it exists and no venv is active, else python)
set -euo pipefail
# shellcheck source=tools/_python.sh
source "$(dirname "${BASH_SOURCE[0]}")/_python.sh"
SCRIPT=$1
NPROC=$2
shift 2
exec "$PY" -m torch.distributed.run \
  --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
  --nproc_per_node="$NPROC" \
  "$SCRIPT" "$@" --launcher pytorch
