#!/usr/bin/env bash
# Package the histofed binary as a container image without a container engine or a registry: a directory with the
# binary, every shared library it loads (ldd) at the path the loader resolves it to, and the dynamic loader, turned
# into a single-layer docker-archive tarball by shared/k8s/images/mkimage.py. Node mode (shared/k8s/node-up.sh)
# imports it with `ctr images import`; manifests must use `imagePullPolicy: Never`.
#
#   scripts/k8s_image.sh [BINARY] [OUT.tar] [NAME:TAG]
#     BINARY   default $HISTOFED_BIN, else target/release/histofed, else target/debug/histofed
#     OUT.tar  default target/k8s-image/histofed.tar
#     NAME:TAG default localhost/histofed:e2e
#
# Why libraries keep their resolved absolute paths: build.rs bakes libtorch's directory into the binary's RPATH, and
# libtorch_cpu.so finds libcudart/libcupti through its own RPATH $ORIGIN/../../nvidia/cu13/lib; copying each library
# to where ldd found it keeps both working with no LD_LIBRARY_PATH (mkimage.py's image sets only PATH).
# The image's copy of the binary is stripped of debug info (a debug build: 463 MB -> 34 MB; the original is not
# touched); K8S_IMAGE_STRIP=0 keeps it as it is.
# The Dockerfile is the portable route; this one exists because the machines here have no container engine.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=${HISTOFED_SHARED:-}
if [ -z "$shared" ]; then
  # Beside a checkout in /work, or the machine's copy for a clone elsewhere (CI clones into a temporary folder).
  for c in "$root/../shared" /work/shared; do
    if [ -f "$c/k8s/images/mkimage.py" ]; then shared=$c; break; fi
  done
  shared=${shared:-$root/../shared}
fi
mkimage=$shared/k8s/images/mkimage.py
bin=${1:-${HISTOFED_BIN:-}}
if [ -z "$bin" ]; then
  if [ -x "$root/target/release/histofed" ]; then bin=$root/target/release/histofed; else bin=$root/target/debug/histofed; fi
fi
out=${2:-$root/target/k8s-image/histofed.tar}
ref=${3:-localhost/histofed:e2e}
[ -x "$bin" ] || { echo "k8s_image: no binary at $bin (cargo build --release --bin histofed)" >&2; exit 1; }
[ -f "$mkimage" ] || { echo "k8s_image: $mkimage not found (set HISTOFED_SHARED to the shared/ folder)" >&2; exit 1; }

rootfs=$(mktemp -d "${TMPDIR:-/tmp}/histofed-rootfs.XXXXXX")
if [ "${K8S_IMAGE_KEEP_ROOTFS:-0}" = 1 ]; then echo "k8s_image: keeping $rootfs" >&2; else trap 'rm -rf "$rootfs"' EXIT; fi
mkdir -p "$rootfs"/{usr/local/bin,tmp,etc,proc,sys,dev,var/lib/histofed}
chmod 1777 "$rootfs/tmp"
install -m 0755 "$bin" "$rootfs/usr/local/bin/histofed"
if [ "${K8S_IMAGE_STRIP:-1}" = 1 ] && command -v strip >/dev/null; then strip --strip-debug "$rootfs/usr/local/bin/histofed"; fi

# `ldd` lines: "libx.so => /abs/path (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"; skip the vDSO.
n=0
while read -r path; do
  [ -n "$path" ] || continue
  src=$(readlink -f "$path")
  dest=$rootfs$(realpath -m -s "$path")   # normalise ../ but keep the name the loader asks for
  mkdir -p "$(dirname "$dest")"
  cp -L "$src" "$dest"
  chmod 0755 "$dest"
  # Also (hard-linked, no extra bytes) in a directory the loader searches by default: the path ldd found may be
  # hidden in the pod — a checkout under /tmp meets the emptyDir the manifests mount on /tmp — and then the
  # binary's RUNPATH points nowhere and the loader falls back to this.
  mkdir -p "$rootfs/usr/lib/x86_64-linux-gnu"
  flat=$rootfs/usr/lib/x86_64-linux-gnu/$(basename "$dest")
  [ "$flat" = "$dest" ] || ln -f "$dest" "$flat"
  n=$((n + 1))
done < <(ldd "$bin" | awk '/=>/ && $3 ~ /^\// {print $3} !/=>/ && $1 ~ /^\// {print $1}' | sort -u)
# The loader must be where the ELF header's PT_INTERP names it.
interp=$(readelf -l "$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
if [ -n "$interp" ] && [ ! -e "$rootfs$interp" ]; then
  mkdir -p "$(dirname "$rootfs$interp")"
  cp -L "$interp" "$rootfs$interp"
  n=$((n + 1))
fi
# A user entry for the manifests' runAsUser, for tools that look it up (glibc does not need it).
printf 'root:x:0:0:root:/root:/sbin/nologin\nhistofed:x:10001:10001:histofed:/nonexistent:/sbin/nologin\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nhistofed:x:10001:\n' > "$rootfs/etc/group"

mkdir -p "$(dirname "$out")"
echo "k8s_image: $bin + $n libraries -> $out ($ref), $(du -sh "$rootfs" | cut -f1) unpacked" >&2
python3 "$mkimage" "$out" "$ref" "$rootfs" -- /usr/local/bin/histofed --help
