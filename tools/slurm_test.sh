#!/usr/bin/env bash
# Testing on a Slurm cluster.
#   tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args...]
set -euo pipefail
SCRIPT=test.py exec "$(dirname "${BASH_SOURCE[0]}")/slurm_train.sh" "$@"
