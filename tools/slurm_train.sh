#!/usr/bin/env bash
# Training or testing on a Slurm cluster (srun starts one task per GPU).
#   tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py args...]
#   SCRIPT=test.py tools/slurm_train.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args...]
# Environment: GPUS (8), GPUS_PER_NODE (8), CPUS_PER_TASK (5), SRUN_ARGS (""), PYTHON (the installer's .venv when it exists and no venv is active, else python)
set -euo pipefail
if [ "$#" -lt 3 ]; then
  echo "usage: $0 PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py args...]" >&2; exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
SCRIPT=${SCRIPT:-train.py}
EXTRA=()
if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
  if [ "$SCRIPT" = train.py ]; then EXTRA=(--work-dir "$1"); else EXTRA=("$1"); fi
  shift
fi
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tools/_python.sh
source "$DIR/_python.sh"
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
# shellcheck disable=SC2086
srun -p "$PARTITION" --job-name="$JOB_NAME" \
  --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" --ntasks-per-node="$GPUS_PER_NODE" \
  --cpus-per-task="${CPUS_PER_TASK:-5}" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
  "$PY" -u "$DIR/$SCRIPT" "$CONFIG" "${EXTRA[@]}" --launcher slurm "$@"
