# histofed — the two commands a newcomer needs are `make demo` and `make test`.
# Both set up whatever is missing first (libtorch from PyPI's torch wheel into .libtorch/; the HDF5 C library from
# the distribution's packages) and are idempotent.

TORCH_STAMP := .libtorch/.stamp-torch-2.13.0
CARGO ?= cargo
export OMP_WAIT_POLICY := PASSIVE

.PHONY: setup system-deps build image cuda-bundle gpu-check-cpu demo test test-long chaos chaos-k8s k8s-validate test-k8s e2e-k8s e2e-k8s-nodeloss lint fmt clean-runs

$(TORCH_STAMP): scripts/setup_libtorch.py
	@command -v python3 >/dev/null 2>&1 || { echo "error: python3 (3.11 with pip) is needed to fetch libtorch; install it and rerun 'make'"; exit 1; }
	python3 scripts/setup_libtorch.py

## system-deps: C libraries the build links against (HDF5 for the PCam loader), from apt when missing
system-deps:
	@scripts/setup_system_deps.sh

setup: $(TORCH_STAMP) system-deps

build: setup
	$(CARGO) build --bin histofed

## image: the CPU runtime image from the Dockerfile (target prebuilt) with buildah, as root; writes the OCI archive
## target/image/histofed.tar and prints its size and where the space goes (see scripts/image.sh)
image: build
	scripts/image.sh

## cuda-bundle: the CUDA build (release, --features cuda) against the GPU machine's torch version (2.11.0) plus
## scripts/gpu_check.sh and bench/gan_step.py in gpu-bundle/ (< 64 MiB); proves its CPU path runs here
cuda-bundle: system-deps
	scripts/cuda_bundle.sh

## gpu-check-cpu: the GPU check's CPU fallback, end to end, with the debug binary (tiny sizes; outputs in runs/gpu-check-cpu)
gpu-check-cpu: build
	GPU_CHECK_DEVICE=cpu scripts/gpu_check.sh runs/gpu-check-cpu

## demo: a server and 3 sites as separate processes on 127.0.0.1; outputs in runs/demo (ARGS="--out DIR ..." to change)
demo: build
	./target/debug/histofed demo $(ARGS)

## test: the whole default test suite (unit, multi-process federation on loopback)
test: setup
	$(CARGO) build --examples
	$(CARGO) test --all-targets

## test-long: the slow #[ignore]d tests (throughput measurements), except the Kubernetes ones (make test-k8s)
test-long: setup
	$(CARGO) build --examples
	$(CARGO) test --all-targets -- --ignored --skip kube::

## k8s-validate: render k8s/overlays/* with kustomize and validate every object against the Kubernetes 1.33 schemas
k8s-validate:
	scripts/k8s_validate.sh

## test-k8s: the Kubernetes code against a real API server (../shared/k8s, envtest mode), started and stopped here
test-k8s: setup
	scripts/test_k8s_api.sh

## e2e-k8s: server + 3 site pods in a real single-node cluster (../shared/k8s node mode, root), pods killed mid-run
e2e-k8s: build
	scripts/e2e_k8s.sh

## e2e-k8s-nodeloss: two real nodes (../shared/k8s node mode + node 2, root): node 2 killed mid-training, its sites
## force-deleted and replaced on node 1; node 2 back, frozen with a site on it, resumed: the zombie is fenced
e2e-k8s-nodeloss: build
	E2E_SCENARIO=nodeloss E2E_OUT=target/k8s-nodeloss scripts/e2e_k8s.sh

## lint: formatting, clippy, and the check that `cargo build` and `cargo test` compile shared crates alike
lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	CARGO=$(CARGO) scripts/check_features.sh
	CARGO=$(CARGO) python3 scripts/compile_time_crates.py --check

fmt:
	$(CARGO) fmt --all

clean-runs:
	rm -rf runs

## chaos: every chaos scenario with fault-free twins → runs/chaos/chaos-report.md (partition and disk-full need root)
chaos: build
	./target/debug/histofed chaos run chaos/ --out runs/chaos

## chaos-k8s: the Kubernetes chaos scenarios in real pods — repeated site-pod kills during training, a server-pod kill —
## with the e2e invariants (every round once, killed sites rejoin, the server resumes from its checkpoint)
chaos-k8s: build
	E2E_ROUNDS=40 E2E_KILLS=5 E2E_KILL_EVERY=6s E2E_OUT=target/k8s-chaos scripts/e2e_k8s.sh
