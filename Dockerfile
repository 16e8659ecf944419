# syntax=docker/dockerfile:1
# histofed container image (CPU). Two targets on one runtime base:
#
#   docker build -t histofed:0.1.0-cpu .        # default: builds the binary in rust:1.95 (needs a registry)
#   sudo make image                             # buildah, no daemon, no registry: target `prebuilt`, the binary
#                                               # built on the host (see scripts/image.sh)
#   docker run --rm histofed:0.1.0-cpu --help
#
# The runtime: a slim Debian (the BASE argument; `make image` makes one with mmdebstrap), libstdc++, the HDF5 shared
# library the PCam loader links, CA certificates, the binary and the libtorch shared libraries it loads — nothing
# else. Runs as uid 10001 (the manifests' runAsUser). Needs BuildKit (Docker 23+ default, or buildah), which builds
# only the stages a target uses.
#
# CUDA variant (histofed:0.1.0-cuda, k8s/overlays/gpu): the same runtime base with the full CUDA torch libraries:
#
#   docker build --target runtime-cuda -t histofed:0.1.0-cuda .   # builds the CUDA binary in rust:1.95
#   sudo IMAGE_VARIANT=cuda make image                          # buildah: target `prebuilt-cuda`, the binary from
#                                                               # `make cuda-bundle` (scripts/cuda_bundle.sh)
#
# Both build with scripts/cuda_bundle.sh against torch TORCH_CUDA_VERSION (2.11.0, the version of the GPU machine the
# check runs on) with the tch release made for it (0.24.0; tch 0.26 does not compile against 2.11.0's headers),
# `--features cuda` (build.rs keeps libtorch_cuda linked) and without the HDF5-linked pcam loader, and carry
# torch/lib plus site-packages/nvidia/*/lib, keeping the
# torch/lib <-> nvidia/<pkg>/lib layout libtorch's RPATH $ORIGIN/../../nvidia/... expects. The host's driver comes
# from the NVIDIA container toolkit (NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES below).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
ARG TORCH_CUDA_VERSION=2.11.0
ARG BASE=debian:${DEBIAN_RELEASE}-slim

# --- the runtime base both targets share
FROM ${BASE} AS runtime-base
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="histofed" \
      org.opencontainers.image.description="Resilient federated GAN training on histopathology images (CPU)" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# libstdc++ for libtorch; libgomp ships with libtorch (torch/lib/libgomp.so.1); libhdf5-103-1 is the HDF5 1.10
# shared library the builder's libhdf5-dev linked against (bookworm's name for it).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libstdc++6 libhdf5-103-1 ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc /usr/share/man /usr/share/locale \
 && groupadd --gid 10001 histofed \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin histofed \
 && mkdir -p /var/lib/histofed && chown 10001:10001 /var/lib/histofed
# Keep the layout: libtorch_cpu.so finds libcudart/libcupti (needed even on CPU) via $ORIGIN/../../nvidia/cu13/lib.
ENV LD_LIBRARY_PATH=/opt/libtorch/torch/lib \
    OMP_WAIT_POLICY=PASSIVE
USER 10001:10001
WORKDIR /var/lib/histofed
EXPOSE 7000 9090
# No HEALTHCHECK: the OCI image format has none, and Kubernetes ignores it. The roles' `--http` endpoint is the
# health check: /healthz (liveness, startup), /readyz (readiness), as k8s/base wires them; `docker run` users can
# poll the same paths.
ENTRYPOINT ["/usr/local/bin/histofed"]
CMD ["--help"]

# --- target `prebuilt` (`make image`): scripts/image.sh stages the host-built, stripped binary and the libtorch
# libraries it loads in the build context's dist/
FROM runtime-base AS prebuilt
COPY dist/opt/libtorch /opt/libtorch
COPY dist/histofed /usr/local/bin/histofed

# --- CUDA: target `prebuilt-cuda` (`IMAGE_VARIANT=cuda make image`): the bundle's binary and the CUDA torch
# libraries scripts/image.sh stages in dist/
FROM runtime-base AS prebuilt-cuda
LABEL org.opencontainers.image.description="Resilient federated GAN training on histopathology images (CUDA)"
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY dist/opt/libtorch /opt/libtorch
COPY dist/histofed /usr/local/bin/histofed

# --- CUDA: build the binary against the CUDA torch wheel set, exactly as `make cuda-bundle` does (tch pinned to the
# release made for TORCH_CUDA_VERSION, --features cuda, without the HDF5-linked pcam loader)
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder-cuda
ARG TORCH_CUDA_VERSION
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv binutils \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY config config
COPY src src
COPY bench/gan_step.py bench/
COPY scripts/cuda_bundle.sh scripts/gpu_check.sh scripts/
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    TORCH_CUDA_VERSION=${TORCH_CUDA_VERSION} scripts/cuda_bundle.sh \
 && install -D -m 0755 gpu-bundle/histofed /out/histofed \
 && mv .libtorch-cuda/lib/python3.11/site-packages /out/site-packages

FROM runtime-base AS runtime-cuda
LABEL org.opencontainers.image.description="Resilient federated GAN training on histopathology images (CUDA)"
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY --from=builder-cuda /out/site-packages/torch/lib /opt/libtorch/torch/lib
COPY --from=builder-cuda /out/site-packages/nvidia /opt/libtorch/nvidia
COPY --from=builder-cuda /out/histofed /usr/local/bin/histofed

# --- the default target (the last stage, what a plain `docker build .` makes): build the binary here
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# libtorch first: ~530 MB of wheels, cached as its own layer until the setup scripts change; `make setup` also
# installs libhdf5-dev (the PCam loader links against the system HDF5).
COPY Makefile ./
COPY scripts/setup_libtorch.py scripts/setup_system_deps.sh scripts/
RUN make setup
COPY .cargo .cargo
COPY Cargo.toml Cargo.lock build.rs ./
COPY config config
COPY src src
# The RPATH baked by build.rs points at /src/.libtorch/torch/lib; the runtime uses LD_LIBRARY_PATH instead.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin histofed \
 && install -D -m 0755 target/release/histofed /out/histofed

FROM runtime-base AS runtime
COPY --from=builder /src/.libtorch/torch/lib /opt/libtorch/torch/lib
COPY --from=builder /src/.libtorch/nvidia /opt/libtorch/nvidia
COPY --from=builder /out/histofed /usr/local/bin/histofed

