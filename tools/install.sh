#!/usr/bin/env bash
# Install the OpenMMLab stack and dfl_mm into a virtual environment. Idempotent.
#
#   bash tools/install.sh [--tests]
#
# Environment:
#   VENV              virtual environment to create/use (default: .venv in the repo root)
#   PYTHON            interpreter that creates it (default: python3.11, then python3)
#   DFL_MM_WHEEL_CACHE  per-user cache of the mmcv wheels this installer builds (default:
#                     ${XDG_CACHE_HOME:-~/.cache}/dfl_mm/wheels, one folder per torch version):
#                     a second environment on this machine installs mmcv in seconds
#   MMCV_WHEEL_CACHE  another folder with prebuilt mmcv wheels (pip --find-links), tried first;
#                     a wheel is used only when `import mmcv._ext` works with the installed
#                     torch, otherwise mmcv is built from source
#   FORCE_CUDA        1/0: build mmcv's CUDA ops (default: 1 when torch sees CUDA and nvcc exists)
#   MAX_JOBS          parallel compile jobs for the mmcv build (default: all cores)
#   TORCH_SPEC        pip spec for torch+torchvision when none works yet
#                     (default: "torch==2.14.1 torchvision==0.29.1")
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
WITH_TESTS=0
for arg in "$@"; do
  case "$arg" in
    --tests) WITH_TESTS=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument '$arg' (expected --tests)" >&2; exit 2 ;;
  esac
done

log() { printf '[install] %s\n' "$*"; }
start=$SECONDS

if [ ! -x "$VENV/bin/python" ]; then
  PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
  log "creating $VENV with $PY"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install -q --disable-pip-version-check)

# torch + torchvision: keep a working pair, otherwise install the pinned one.
if "$PY" -c "import torch, torchvision; torchvision.ops.nms" 2>/dev/null; then
  log "torch $("$PY" -c 'import torch; print(torch.__version__)') already works"
else
  log "installing ${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
  # shellcheck disable=SC2086
  "${PIP[@]}" ${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
fi

# setuptools 80.x: torch 2.14 needs >= 77; mmengine imports pkg_resources (removed in 81)
# at run time to resolve mmdet::/mmseg:: configs, and the mmcv build needs it too.
"${PIP[@]}" "setuptools>=77,<81" wheel ninja
"${PIP[@]}" -r "$ROOT/requirements/runtime.txt" mmengine==0.10.7

mmcv_ok() { "$PY" -c "import mmcv, mmcv._ext; assert mmcv.__version__ == '2.1.0'" 2>/dev/null; }
torch_tag="$("$PY" -c 'import torch; print(torch.__version__.replace("+", "_"))')"
USER_CACHE="${DFL_MM_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dfl_mm/wheels}/torch-$torch_tag"

try_wheels() {  # try_wheels DIR: install mmcv from a wheel folder, keep it only if it works
  [ -d "$1" ] && ls "$1"/mmcv-2.1.0-*.whl >/dev/null 2>&1 || return 1
  log "trying the mmcv wheel in $1"
  "${PIP[@]}" --no-index --find-links "$1" --no-deps --force-reinstall mmcv==2.1.0 || true
  mmcv_ok && return 0
  log "that mmcv wheel does not fit this torch"
  "$PY" -m pip uninstall -q -y mmcv || true
  return 1
}

if mmcv_ok; then
  log "mmcv 2.1.0 with compiled ops already works"
else
  try_wheels "${MMCV_WHEEL_CACHE:-/nonexistent}" || try_wheels "$USER_CACHE" || true
  if ! mmcv_ok; then
    build_dir="$(mktemp -d)"
    jobs="${MAX_JOBS:-$(nproc)}"
    # measured: 16.6 min on 2 idle cores (35 min under load); the C++/CUDA files compile in parallel
    log "building mmcv 2.1.0 with ops from source in $build_dir: about $(( (33 + jobs - 1) / jobs )) min on $jobs idle cores (longer under load; FORCE_CUDA builds take longer); the wheel is kept in $USER_CACHE"
    "$PY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
      -d "$build_dir" mmcv==2.1.0
    tar -xzf "$build_dir"/mmcv-2.1.0.tar.gz -C "$build_dir"
    src="$build_dir/mmcv-2.1.0"
    # torch >= 2.10 headers need C++20; mmcv 2.1.0 hard-codes -std=c++17 (mmcv issue 3341).
    cxx_std="$("$PY" -c "import torch; v=tuple(int(x) for x in torch.__version__.split('+')[0].split('.')[:2]); print('c++20' if v >= (2, 10) else 'c++17')")"
    sed -i "s/-std=c++17/-std=$cxx_std/g" "$src/setup.py"
    if [ -z "${FORCE_CUDA:-}" ]; then
      FORCE_CUDA=0
      if command -v nvcc >/dev/null && "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
        FORCE_CUDA=1
      fi
    fi
    log "C++ standard $cxx_std, FORCE_CUDA=$FORCE_CUDA, MAX_JOBS=$jobs; compiler output in $build_dir/build.log"
    build_start=$SECONDS
    (cd "$src" && MMCV_WITH_OPS=1 FORCE_CUDA="$FORCE_CUDA" MAX_JOBS="$jobs" \
      "$PY" -m pip wheel -v --no-build-isolation --no-deps -w "$build_dir/wheel" . \
      > "$build_dir/build.log" 2>&1) &
    build_pid=$!
    bash "$ROOT/tools/_build_progress.sh" "$build_dir/build.log" "$build_pid" "mmcv build" &
    progress_pid=$!
    if ! wait "$build_pid"; then
      kill "$progress_pid" 2>/dev/null || true
      tail -n 40 "$build_dir/build.log" >&2
      echo "[install] ERROR: the mmcv build failed; the full log is $build_dir/build.log" >&2
      exit 1
    fi
    kill "$progress_pid" 2>/dev/null || true
    log "mmcv built in $(( (SECONDS - build_start) / 60 )) min $(( (SECONDS - build_start) % 60 )) s"
    "${PIP[@]}" --no-deps --force-reinstall "$build_dir"/wheel/mmcv-2.1.0-*.whl
    # mmcv's own pure-Python requirements
    "${PIP[@]}" addict packaging Pillow pyyaml yapf
    mmcv_ok || { echo "[install] ERROR: mmcv built but 'import mmcv._ext' fails" >&2; exit 1; }
    mkdir -p "$USER_CACHE" && cp "$build_dir"/wheel/mmcv-2.1.0-*.whl "$USER_CACHE"/ \
      && log "kept the mmcv wheel in $USER_CACHE for the next environment"
    rm -rf "$build_dir"
  fi
fi

"${PIP[@]}" addict packaging Pillow pyyaml yapf mmdet==3.3.0 mmsegmentation==1.2.2
"${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT"
# mim looks for a package's configs and tools under site-packages/<package>, which an
# editable install does not create: link the checkout's package there (the same files
# the editable finder maps), so `mim train dfl_mm NAME.py` finds shipped configs
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if [ -L "$SITE/dfl_mm" ] || [ ! -e "$SITE/dfl_mm" ]; then
  ln -sfn "$ROOT/dfl_mm" "$SITE/dfl_mm"
fi
if [ "$WITH_TESTS" = 1 ]; then
  "${PIP[@]}" -r "$ROOT/requirements/tests.txt"
  # openmim for the mim test, without opendatalab/openxlab (they pin setuptools 60):
  # its other requirements first and openmim itself last, with --no-deps, so no pip
  # run after it reports the missing opendatalab as a dependency conflict
  "${PIP[@]}" click colorama model-index pandas requests rich tabulate
  "${PIP[@]}" --no-deps openmim==0.3.9
fi
log "done in $((SECONDS - start)) s; environment: $VENV"
