#!/usr/bin/env bash
# `make image`: the CPU runtime image, built from the Dockerfile with buildah (no daemon, no registry), then written
# as an OCI archive that containerd imports (`ctr -n k8s.io images import`, what `make e2e-k8s` does).
#
#   sudo scripts/image.sh                      # ~3-6 min the first time (base image), ~1-2 min after
#   HISTOFED_BIN=target/release/histofed IMAGE_REF=localhost/histofed:0.1.0-cpu scripts/image.sh
#   sudo IMAGE_VARIANT=cuda scripts/image.sh  # the GPU image from gpu-bundle/histofed (make cuda-bundle) and the
#                                             # CUDA torch wheel set in .libtorch-cuda (not run here: no GPU)
#
# What it does, and why this way:
#  - the binary is built on the host (`make build`, or HISTOFED_BIN): rustup cannot download a toolchain here and no
#    registry serves rust:1.95 — the Dockerfile's `prebuilt` target takes it from the build context, while its default
#    multi-stage target (builder + runtime) stays what `docker build .` does where a registry is reachable;
#  - the base (the Dockerfile's `BASE` argument, debian:bookworm-slim elsewhere) is made locally once with
#    `mmdebstrap --variant=minbase bookworm` from Debian's mirror and kept in buildah's storage as
#    localhost/histofed-base:bookworm (IMAGE_BASE names another one already there);
#  - the build context is a small folder of its own (target/image/context): the stripped binary and the libtorch
#    libraries it loads (from ldd, keeping libtorch's torch/lib ↔ nvidia/cu13/lib layout), nothing else.
#
# Environment: IMAGE_VARIANT (cpu, default, or cuda), HISTOFED_BIN (default target/release/histofed, else
# target/debug/histofed; cuda: gpu-bundle/histofed), IMAGE_REF (default localhost/histofed:0.1.0-cpu or -cuda),
# IMAGE_OUT (default target/image; the archive is IMAGE_OUT/histofed.tar, or histofed-cuda.tar),
# IMAGE_BASE (skip making the base), DEBIAN_MIRROR (default http://deb.debian.org/debian).
# Prints `image: REF, N MB` and where the space goes as its last lines.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
variant=${IMAGE_VARIANT:-cpu}
bin=${HISTOFED_BIN:-}
case "$variant" in
  cpu)
    if [ -z "$bin" ]; then
      if [ -x "$root/target/release/histofed" ]; then bin=$root/target/release/histofed; else bin=$root/target/debug/histofed; fi
    fi
    target=prebuilt archive=histofed.tar ;;
  cuda)
    bin=${bin:-$root/gpu-bundle/histofed}
    target=prebuilt-cuda archive=histofed-cuda.tar ;;
  *) echo "image: IMAGE_VARIANT=$variant: expected cpu or cuda" >&2; exit 1 ;;
esac
ref=${IMAGE_REF:-localhost/histofed:0.1.0-$variant}
out=$(realpath -m "${IMAGE_OUT:-$root/target/image}")
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
say() { echo "image: $*" >&2; }
[ -x "$bin" ] || { say "no binary at $bin (make build, make cuda-bundle for IMAGE_VARIANT=cuda, or set HISTOFED_BIN)"; exit 1; }
[ "$(id -u)" = 0 ] || { say "buildah without a daemon needs root here (rootless needs subuid maps this VM lacks)"; exit 1; }
for tool in buildah mmdebstrap; do
  command -v "$tool" >/dev/null || { say "installing $tool (apt)"; apt-get install -y --no-install-recommends "$tool" >/dev/null; }
done
bah() { buildah --storage-driver vfs "$@"; }
mkdir -p "$out"

# --- the base
base=${IMAGE_BASE:-localhost/histofed-base:bookworm}
if ! bah inspect --type image "$base" >/dev/null 2>&1; then
  [ -z "${IMAGE_BASE:-}" ] || { say "IMAGE_BASE=$base is not in buildah's storage"; exit 1; }
  say "making the base $base with mmdebstrap (once)"
  # Like debian:bookworm-slim: no manuals, docs (copyrights kept) or translations, no apt lists; the dpkg
  # excludes stay in the image (/etc/dpkg/dpkg.cfg.d), so the Dockerfile's apt-get install honours them too.
  mmdebstrap --quiet --variant=minbase \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/cache/apt/archives/*.deb' \
    bookworm "$out/base.tar" "$mirror"
  c=$(bah from scratch)
  bah add "$c" "$out/base.tar" / >/dev/null
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/bash "$c"
  bah commit --rm --quiet "$c" "$base" >/dev/null
  rm -f "$out/base.tar"
fi

# --- the build context: the stripped binary and the libtorch libraries it loads
ctx=$out/context
rm -rf "$ctx" && mkdir -p "$ctx/dist/opt/libtorch"
objcopy --strip-debug "$bin" "$ctx/dist/histofed"
if [ "$variant" = cuda ]; then
  # The whole CUDA wheel set the bundle was built against: libtorch_cuda and cuDNN open parts of it with dlopen,
  # which ldd does not see. Python's own extension (libtorch_python) stays out.
  site=$(realpath "$root/.libtorch-cuda/lib/python3.11/site-packages" 2>/dev/null || true)
  [ -f "$site/torch/lib/libtorch_cuda.so" ] || { say "no CUDA torch in .libtorch-cuda (make cuda-bundle makes it)"; exit 1; }
  mkdir -p "$ctx/dist/opt/libtorch/torch/lib"
  find "$site/torch/lib" -maxdepth 1 -name '*.so*' ! -name 'libtorch_python.so' -exec cp -a {} "$ctx/dist/opt/libtorch/torch/lib/" \;
  for d in "$site"/nvidia/*/lib; do
    [ -d "$d" ] || continue
    rel=${d#"$site"/}
    mkdir -p "$ctx/dist/opt/libtorch/$rel"
    cp -a "$d"/. "$ctx/dist/opt/libtorch/$rel/"
  done
else
libtorch=$(realpath "$root/.libtorch")
while read -r lib; do
  real=$(realpath "$lib")
  case "$real" in "$libtorch"/*) ;; *) continue ;; esac
  rel=${real#"$libtorch"/}
  mkdir -p "$ctx/dist/opt/libtorch/$(dirname "$rel")"
  cp "$real" "$ctx/dist/opt/libtorch/$rel"
  # The name the loader asks for (a soname link) must exist beside the file.
  [ "$(basename "$lib")" = "$(basename "$real")" ] || ln -sf "$(basename "$real")" "$ctx/dist/opt/libtorch/$(dirname "$rel")/$(basename "$lib")"
done < <(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3}')
fi
[ -f "$ctx/dist/opt/libtorch/torch/lib/libtorch_cpu.so" ] || { say "the binary loads no libtorch from the staged libraries"; exit 1; }

# --- build, then the archive containerd imports
say "building $ref from $base"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
source=$(git -C "$root" remote get-url origin 2>/dev/null || echo unknown)
bah bud --quiet --isolation chroot --pull-never --layers=false --target "$target" --build-arg "BASE=$base" \
  --build-arg "VERSION=$version" --build-arg "REVISION=$revision" --build-arg "SOURCE=$source" \
  -f "$root/Dockerfile" -t "$ref" "$ctx" >/dev/null
rm -f "$out/$archive"
bah push --quiet "$ref" "oci-archive:$out/$archive:$ref"
# Smoke: the image's binary runs (every role is this one binary) and loads libtorch.
c=$(bah from --pull-never "$ref")
trap 'bah rm "$c" >/dev/null 2>&1 || true' EXIT
bah run --isolation chroot "$c" -- /usr/local/bin/histofed --version >/dev/null \
  || { say "the image's binary does not run"; exit 1; }
if [ "$variant" = cuda ]; then
  # No GPU here: the CUDA build's CPU path, with every CUDA library loaded from the image.
  probe=$(bah run --isolation chroot "$c" -- /usr/local/bin/histofed device --device cpu --json) \
    || { say "the CUDA image's binary cannot run its CPU path"; exit 1; }
  echo "$probe" | grep -q '"cuda_built": true' || { say "the CUDA image's libtorch has no CUDA: $probe"; exit 1; }
  say "CUDA build, CPU path in the image: $(echo "$probe" | tr -d ' \n')"
fi
mb() { du -sm "$1" | cut -f1; }
mnt=$(bah mount "$c")
say "$ref $(bah inspect --type image --format '{{.FromImageDigest}}' "$ref"), revision $revision"
say "$ref, $(( $(stat -c %s "$out/$archive") / 1000000 )) MB archive ($out/$archive)"
say "space: libtorch $(mb "$mnt/opt/libtorch") MB, histofed $(mb "$mnt/usr/local/bin/histofed") MB, Debian base + runtime packages $(( $(mb "$mnt") - $(mb "$mnt/opt/libtorch") - $(mb "$mnt/usr/local/bin/histofed") )) MB (of which /usr/lib $(mb "$mnt/usr/lib") MB, /usr/share $(mb "$mnt/usr/share") MB, /var $(mb "$mnt/var") MB)"
bah umount "$c" >/dev/null
