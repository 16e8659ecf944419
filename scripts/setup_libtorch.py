#!/usr/bin/env python3
"""Fetch PyPI's torch 2.13.0 CPU libraries into .libtorch/ so that tch 0.26 builds with no env vars.

Why this script: tch's `download-libtorch` feature needs a host we cannot reach and Debian's libtorch is too old.
PyPI's torch wheel carries the same libtorch; we take only the headers and the CPU shared libraries we need
(see ../shared/notes/libtorch.md for the measured recipe). A stamp file makes a second run a no-op.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

TORCH_VERSION = "2.13.0"
WHEELS = [f"torch=={TORCH_VERSION}", "nvidia-cuda-runtime==13.0.96", "nvidia-cuda-cupti==13.0.85"]
TORCH_LIBS = {"libtorch_cpu.so", "libtorch.so", "libc10.so", "libgomp.so.1", "libtorch_global_deps.so", "libshm.so"}
NVIDIA_LIBS = {"libcudart.so.13", "libcupti.so.13"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEST = os.path.join(ROOT, ".libtorch")
STAMP = os.path.join(DEST, f".stamp-torch-{TORCH_VERSION}")


def fail(msg: str) -> None:
    print(f"setup-libtorch: error: {msg}", file=sys.stderr)
    sys.exit(1)


def wanted(name: str) -> bool:
    if name.startswith("torch/include/"):
        return not name.endswith("/")
    base = os.path.basename(name)
    if name.startswith("torch/lib/") and base in TORCH_LIBS:
        return True
    if name.startswith("nvidia/cu13/lib/") and base in NVIDIA_LIBS:
        return True
    return False


def main() -> None:
    if os.path.exists(STAMP):
        print(f"setup-libtorch: {DEST} is ready (torch {TORCH_VERSION})")
        return
    cache = os.environ.get("HISTOFED_WHEEL_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "histofed-wheels"))
    os.makedirs(cache, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", cache, *WHEELS]
    print("setup-libtorch: fetching torch wheels (about 530 MB, cached in", cache + ")")
    try:
        subprocess.run(cmd, check=True)
    except FileNotFoundError:
        fail("python3 -m pip is not available: install pip for Python 3.11 (python3 -m ensurepip) and rerun")
    except subprocess.CalledProcessError as e:
        fail(f"pip download failed (exit {e.returncode}); check access to PyPI and rerun: {' '.join(cmd)}")
    tmp = tempfile.mkdtemp(prefix=".libtorch-", dir=ROOT)
    try:
        found = set()
        for whl in sorted(os.listdir(cache)):
            if not whl.endswith(".whl") or not any(whl.startswith(p) for p in ("torch-" + TORCH_VERSION, "nvidia_cuda_runtime", "nvidia_cuda_cupti")):
                continue
            with zipfile.ZipFile(os.path.join(cache, whl)) as z:
                for info in z.infolist():
                    if wanted(info.filename):
                        z.extract(info, tmp)
                        found.add(os.path.basename(info.filename))
        missing = (TORCH_LIBS | NVIDIA_LIBS) - found
        if missing:
            fail(f"the wheels in {cache} lack {sorted(missing)}; delete that folder and rerun")
        for dirpath, _, files in os.walk(tmp):
            for f in files:
                if ".so" in f:
                    os.chmod(os.path.join(dirpath, f), 0o755)
        if os.path.exists(DEST):
            shutil.rmtree(DEST)
        os.rename(tmp, DEST)
        open(STAMP, "w").close()
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"setup-libtorch: installed into {DEST}")


if __name__ == "__main__":
    main()
