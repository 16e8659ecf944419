#!/usr/bin/env bash
# System libraries the build links against, installed from the distribution's packages when missing (`make setup`
# runs this; so do `make test`, `make demo` and .ci/run through it). Idempotent: when everything is present it only
# checks and exits.
#
#   HDF5 >= 1.10 with its headers and pkg-config file: the PatchCamelyon loader (`--data pcam:DIR`) reads .h5 files
#   through the hdf5-metno crate, whose build script finds the library with pkg-config. Debian/Ubuntu:
#   libhdf5-dev (bookworm: 1.10.8) and pkg-config.
#
# Not root: sudo is used when it works without a password; otherwise the missing packages are named and the script
# fails. Other systems: the package to install is named (Fedora: hdf5-devel, macOS: brew install hdf5 pkg-config).
set -euo pipefail

have_hdf5() {
  command -v pkg-config >/dev/null 2>&1 && pkg-config --exists 'hdf5 >= 1.10' 2>/dev/null
}

if have_hdf5; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: the HDF5 C library (>= 1.10, headers and pkg-config file) is missing; install it with your package" \
    "manager (Debian/Ubuntu: libhdf5-dev pkg-config; Fedora: hdf5-devel pkgconf; macOS: brew install hdf5 pkg-config)" \
    "and rerun 'make setup'" >&2
  exit 1
fi

sudo=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    echo "error: libhdf5-dev and pkg-config are missing and installing them needs root:" \
      "run 'sudo apt-get install -y libhdf5-dev pkg-config' and rerun 'make setup'" >&2
    exit 1
  fi
fi

echo "setup: installing libhdf5-dev and pkg-config (apt-get)"
export DEBIAN_FRONTEND=noninteractive
# Package lists may be stale or absent (containers delete them): refresh them first.
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends libhdf5-dev pkg-config
if ! have_hdf5; then
  echo "error: libhdf5-dev was installed but pkg-config still finds no 'hdf5 >= 1.10'" >&2
  exit 1
fi
echo "setup: HDF5 $(pkg-config --modversion hdf5) ready"
