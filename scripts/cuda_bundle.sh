#!/usr/bin/env bash
# make cuda-bundle: the CUDA build of histofed and what the GPU check needs, in gpu-bundle/ (git-ignored, < 64 MiB),
# ready to travel to a GPU machine that has no Rust toolchain but has its own PyTorch.
#
# Why this shape: the GPU machine brings libtorch (its python's torch wheel, with CUDA); we bring only the stripped
# binary, built here against the headers and link libraries of *that same torch version* (TORCH_CUDA_VERSION, the
# version the machine reported: 2.11.0+cu130). tch's C++ wrapper is generated for one torch version: tch 0.26 (the
# CPU build's, torch 2.13.0) does not compile against 2.11.0's headers even with the version check bypassed
# (`_flash_attention_forward_no_dropout_inplace`, `_philox_*` … are not members of `torch`: 31 errors). So this
# build uses the tch release made for 2.11.0 (TCH_CUDA_VERSION, 0.24.0) in a derived workspace under target/cuda/ws:
# the same sources (linked, not copied), Cargo.toml with tch/torch-sys pinned there, Cargo.lock updated for those
# two crates only. At run time the binary loads the machine's libtorch through LD_LIBRARY_PATH (gpu_check.sh sets it
# from `python3 -c 'import torch'`), which takes precedence over the RUNPATH of this build machine baked in by
# build.rs.
#
# Proves here, on a machine without a GPU, that the CUDA build links libtorch_cuda (kept with --no-as-needed, see
# build.rs) and that its CPU path runs with the CUDA libraries loaded: `histofed device` must say cuda_built=true.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_CUDA_VERSION=${TORCH_CUDA_VERSION:-2.11.0}
TCH_CUDA_VERSION=${TCH_CUDA_VERSION:-0.24.0} # the tch/torch-sys release whose build.rs names TORCH_CUDA_VERSION
VENV=.libtorch-cuda
BUNDLE=gpu-bundle
LIMIT_MIB=60 # the device tool carries 64 MiB per call, the rest of the working tree included

stamp="$VENV/.stamp-torch-$TORCH_CUDA_VERSION"
if [ ! -f "$stamp" ]; then
    echo "cuda-bundle: installing torch==$TORCH_CUDA_VERSION (CUDA wheels, ~3 GB) into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "torch==$TORCH_CUDA_VERSION"
    touch "$stamp"
fi
LIBTORCH=$("$VENV/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
reported=$("$VENV/bin/python" -c 'import torch; print(torch.__version__, torch.version.cuda)')
echo "cuda-bundle: building against torch $reported at $LIBTORCH"
[ -f "$LIBTORCH/lib/libtorch_cuda.so" ] || { echo "cuda-bundle: $LIBTORCH/lib has no libtorch_cuda.so (a CPU wheel?)" >&2; exit 1; }

# The derived workspace: links to the sources, the manifest with tch pinned, the lock file updated for tch only.
ws=target/cuda/ws
mkdir -p "$ws"
for f in src build.rs config bench examples tests assets chaos k8s; do
    [ -e "$f" ] && ln -sfn "$(pwd)/$f" "$ws/$f"
done
sed -e "s/^tch = .*/tch = \"=$TCH_CUDA_VERSION\"/" -e "s/^torch-sys = .*/torch-sys = \"=$TCH_CUDA_VERSION\"/" \
    Cargo.toml >"$ws/Cargo.toml"
grep -q "^tch = \"=$TCH_CUDA_VERSION\"" "$ws/Cargo.toml" || { echo "cuda-bundle: could not pin tch in Cargo.toml" >&2; exit 1; }
[ -f "$ws/Cargo.lock" ] || cp Cargo.lock "$ws/Cargo.lock"
(cd "$ws" && cargo update -q -p tch -p torch-sys)
export LIBTORCH
expected=$(grep -h 'const TORCH_VERSION' "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/torch-sys-"$TCH_CUDA_VERSION"/build.rs 2>/dev/null | head -1 | cut -d'"' -f2)
if [ -n "$expected" ] && [ "$expected" != "$TORCH_CUDA_VERSION" ]; then
    echo "cuda-bundle: torch-sys $TCH_CUDA_VERSION is made for torch $expected, not $TORCH_CUDA_VERSION: set TCH_CUDA_VERSION" >&2
    exit 1
fi
# Without the default `pcam` feature: it links the system HDF5 (libhdf5_serial.so.103 here), which the GPU machine
# does not have; everything else is the same binary.
time cargo build --release --no-default-features --features cuda --bin histofed --manifest-path "$ws/Cargo.toml" --target-dir target/cuda

rm -rf "$BUNDLE"
mkdir -p "$BUNDLE"
strip -o "$BUNDLE/histofed" target/cuda/release/histofed
cp scripts/gpu_check.sh bench/gan_step.py "$BUNDLE/"
{
    echo "histofed CUDA bundle"
    if rev=$(git rev-parse HEAD 2>/dev/null); then
        echo "commit: $rev$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    else
        echo "commit: unknown (no git checkout)"
    fi
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm), $(ldd --version | head -1)"
    echo "against: torch $reported ($LIBTORCH)"
    echo "cargo: $(cargo --version); tch $TCH_CUDA_VERSION; features: cuda (no pcam); profile: release; stripped"
    echo "needed libraries:"
    readelf -d "$BUNDLE/histofed" | grep -E 'NEEDED|RUNPATH|RPATH' | sed 's/^/  /'
    echo "newest symbol versions: $(objdump -T "$BUNDLE/histofed" | grep -o 'GLIBC_[0-9.]*\|GLIBCXX_[0-9.]*' | sort -V | uniq | awk -F_ '{v[$1]=$0} END {print v["GLIBC"], v["GLIBCXX"]}')"
    echo "run there: gpu_check.sh OUT   (it sets LD_LIBRARY_PATH to python3's torch/lib)"
} >"$BUNDLE/BUILD.txt"

if ! readelf -d "$BUNDLE/histofed" | grep -q 'NEEDED.*libtorch_cuda.so'; then
    echo "cuda-bundle: the binary does not need libtorch_cuda.so: CUDA would never be available (see build.rs)" >&2
    exit 1
fi
# Only libtorch (which the GPU machine brings) and the C/C++ runtime: anything else would be missing there.
extra=$(readelf -d "$BUNDLE/histofed" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' \
    | grep -v -E '^(libtorch(_cpu|_cuda)?|libc10(_cuda)?)\.so$|^(libstdc\+\+\.so\.6|libgcc_s\.so\.1|libm\.so\.6|libc\.so\.6|ld-linux-x86-64\.so\.2|libdl\.so\.2|libpthread\.so\.0|librt\.so\.1)$' || true)
if [ -n "$extra" ]; then
    echo "cuda-bundle: the binary needs libraries the GPU machine may lack: $extra" >&2
    exit 1
fi

# The CPU path of the CUDA build, here: libtorch_cuda and the CUDA libraries it needs load without a GPU.
probe=$(LD_LIBRARY_PATH="$LIBTORCH/lib" "$BUNDLE/histofed" device --device cpu --json)
echo "$probe" >"$BUNDLE/device-here.json"
python3 - "$BUNDLE/device-here.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
if not r["cuda_built"] or not r["matmul_ok"]:
    sys.exit(f"cuda-bundle: the CUDA build's CPU probe failed: {r}")
print(f"cuda-bundle: CPU path of the CUDA build runs here: cuda_built={r['cuda_built']}, "
      f"cuda_available={r['cuda_available']}, matmul {r['matmul_ms']:.1f} ms")
EOF

size=$(du -sb "$BUNDLE" | cut -f1)
mib=$(python3 -c "print(f'{$size / 2**20:.1f}')")
ls -la "$BUNDLE"
if [ "$size" -gt $((LIMIT_MIB * 1024 * 1024)) ]; then
    echo "cuda-bundle: $BUNDLE is $mib MiB, over the $LIMIT_MIB MiB that may travel with a GPU call" >&2
    exit 1
fi
echo "cuda-bundle: $BUNDLE is $mib MiB (limit $LIMIT_MIB MiB)"
