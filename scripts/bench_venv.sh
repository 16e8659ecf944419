#!/usr/bin/env bash
# Creates the Python venv that `histofed bench models` runs bench/gan_step.py from: torch 2.13.0, the same release
# as the libtorch tch links (scripts/setup_libtorch.py), and nothing else.
#
#   scripts/bench_venv.sh [DIR]      # DIR defaults to .venv-bench in the repository root (git-ignored: /.venv*)
#   PYTHON=python3.11 scripts/bench_venv.sh
#
# Download size: PyPI's Linux x86_64 torch 2.13.0 wheel pulls in the full CUDA 13 wheel set (nvidia-*, triton),
# about 2.7 GB, even though the benchmark runs on CPU: the wheel's `import torch` needs those libraries. Wheels
# already in ~/.cache/histofed-wheels (left by scripts/setup_libtorch.py; override with HISTOFED_WHEEL_CACHE) are
# used instead of downloading them again.
#
# Idempotent: does nothing when DIR/bin/python already imports torch 2.13.0.
set -euo pipefail

TORCH_VERSION="2.13.0"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$ROOT/.venv-bench}"
PYTHON="${PYTHON:-python3}"
WHEEL_CACHE="${HISTOFED_WHEEL_CACHE:-$HOME/.cache/histofed-wheels}"

die() {
    echo "error: $*" >&2
    exit 1
}

has_torch() {
    [ -x "$DIR/bin/python" ] &&
        "$DIR/bin/python" -c "import torch; assert torch.__version__.startswith('$TORCH_VERSION')" >/dev/null 2>&1
}

if has_torch; then
    echo "$DIR already has torch $TORCH_VERSION; nothing to do (python: $DIR/bin/python)"
    exit 0
fi

command -v "$PYTHON" >/dev/null 2>&1 ||
    die "$PYTHON not found; install Python 3 (3.10 or newer, with the venv module and pip) or set PYTHON=/path/to/python3"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' ||
    die "$PYTHON is $("$PYTHON" -c 'import sys; print(sys.version.split()[0])'); torch $TORCH_VERSION needs Python 3.10 or newer"
"$PYTHON" -c 'import venv' >/dev/null 2>&1 ||
    die "$PYTHON has no venv module; install it (Debian/Ubuntu: apt-get install python3-venv)"

if [ ! -x "$DIR/bin/python" ]; then
    echo "creating venv $DIR with $PYTHON"
    "$PYTHON" -m venv "$DIR" ||
        die "'$PYTHON -m venv $DIR' failed; on Debian/Ubuntu install python3-venv (it provides ensurepip) and retry"
fi
"$DIR/bin/python" -m pip --version >/dev/null 2>&1 ||
    die "pip is missing in $DIR; install python3-venv/python3-pip (ensurepip), delete $DIR and rerun"

find_links=()
if [ -d "$WHEEL_CACHE" ]; then
    find_links=(--find-links "$WHEEL_CACHE")
fi
echo "installing torch==$TORCH_VERSION into $DIR (about 2.7 GB to download unless cached)"
"$DIR/bin/python" -m pip install --disable-pip-version-check ${find_links[@]+"${find_links[@]}"} "torch==$TORCH_VERSION" ||
    die "pip could not install torch==$TORCH_VERSION into $DIR (network, disk space, or Python version without a wheel?)"

has_torch || die "$DIR/bin/python still cannot import torch $TORCH_VERSION after installing; see pip's output above"
echo "ok: $DIR/bin/python has torch $("$DIR/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null)"
echo "run: cargo run -- bench models --python $DIR/bin/python"
