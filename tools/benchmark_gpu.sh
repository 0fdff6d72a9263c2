#!/usr/bin/env bash
# The GPU benchmark of issue 7 in one command (needs a CUDA device):
#   bash tools/benchmark_gpu.sh [PYTHON]
# RetinaNet scale (1.875M anchors x 80 = 150M logits) and DeepLab scale
# (8 x 19 x 512 x 1024 = 80M logits), float32 and bfloat16.
set -euo pipefail
PY=${1:-python}
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
"$PY" -c "import torch; print(torch.cuda.get_device_name(0)); import datetime; print(datetime.date.today())"
for dtype in float32 bfloat16; do
  "$PY" "$DIR/benchmark_loss.py" --device cuda --repeats 10 --dtype "$dtype" \
    --anchors 1875000 --seg-shape 8 19 512 1024
done
