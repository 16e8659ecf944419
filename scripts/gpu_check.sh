#!/usr/bin/env bash
# The one prepared GPU check (issue #15): what the CUDA build does on a real GPU, in under 8 minutes, written to
# OUT as JSON, markdown and PNG. Made to run from the bundle `make cuda-bundle` assembles (gpu-bundle/), on a machine
# with no Rust: the bundle's histofed, bench/gan_step.py, and the machine's own python3 with torch.
#
#   gpu-bundle/gpu_check.sh OUT            # on the GPU machine (CUDA when the binary sees a GPU)
#   GPU_CHECK_DEVICE=cpu scripts/gpu_check.sh OUT   # the CPU fallback, end to end, at tiny sizes (CI-like check)
#
# Steps (each bounded by `timeout`, each recorded whether it passed or not; the script goes on after a failure):
#   1 device: library versions, `histofed device` (CUDA built in, the device answers a checked matrix product)
#   2 p4: the six GAN x discriminator train steps at the paper preset, tch vs PyTorch, interleaved (bench models)
#   3 federation: server + 2 site processes training on the device; site 1 SIGKILLed in the middle of round 2 and
#     restarted: it must resume the round from its local checkpoint, and every round completes once
#   4 oom: a batch too large for the device: a real out-of-memory, caught, the batch halved until it fits
#     (on the CPU fallback the out-of-memory is injected: a CPU has no device memory to exhaust safely)
#   5 train: a time-boxed centralized ACGAN x ViT run at 64 px with its sample grid
# Environment: HISTOFED (binary; default: next to this script, else target/debug), PYTHON (python with torch;
# default python3), TORCH_LIB (libtorch's lib folder; default: the one of PYTHON's torch), GPU_CHECK_DEVICE
# (auto | cuda | cpu; default auto).
set -uo pipefail

OUT=${1:?usage: gpu_check.sh OUT_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
LOG="$OUT/gpu-check.log"
: >"$LOG"
START=$(date +%s)

log() { echo "[gpu-check $(($(date +%s) - START))s] $*" | tee -a "$LOG" >&2; }

# The binary and the bench script: from the bundle, else from a source checkout.
if [ -z "${HISTOFED:-}" ]; then
    if [ -x "$HERE/histofed" ]; then HISTOFED="$HERE/histofed"; else HISTOFED="$HERE/../target/debug/histofed"; fi
fi
GAN_STEP="$HERE/gan_step.py"
[ -f "$GAN_STEP" ] || GAN_STEP="$HERE/../bench/gan_step.py"
PYTHON=${PYTHON:-python3}
if [ ! -x "$HISTOFED" ]; then
    echo "gpu_check: no histofed binary at $HISTOFED (set HISTOFED, or run make cuda-bundle)" >&2
    exit 2
fi

# libtorch: the GPU machine's own (the bundle carries none), found through its python's torch — only when the
# binary does not find one by itself (a binary built in a source checkout has its libtorch in its RUNPATH, and
# another version's would not fit it).
if [ -z "${TORCH_LIB:-}" ] && ldd "$HISTOFED" 2>/dev/null | grep -q 'libtorch.*not found'; then
    TORCH_LIB=$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null || true)
    [ -n "$TORCH_LIB" ] || { echo "gpu_check: $HISTOFED needs libtorch and $PYTHON has no torch (set TORCH_LIB)" >&2; exit 2; }
fi
if [ -n "${TORCH_LIB:-}" ]; then export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
export OMP_WAIT_POLICY=PASSIVE
# gan_step.py's PyTorch twin is found by `bench models` next to the crate manifest it was built from; on the GPU
# machine it is next to this script instead.
export HISTOFED_GAN_STEP="$GAN_STEP"

# results: one JSON file per step in $WORK/steps, merged into $OUT/gpu-check.json at the end.
mkdir -p "$WORK/steps"
record() { # name status seconds detail-json
    printf '{"step":"%s","status":"%s","secs":%s,"detail":%s}\n' "$1" "$2" "$3" "${4:-null}" >"$WORK/steps/$1.json"
    log "step $1: $2 ($3 s)"
}
# A step's status from its exit code (124: its timeout) and whether its own checks held (0: they did).
verdict() { if [ "$1" -eq 124 ]; then echo timeout; elif [ "$2" -eq 0 ]; then echo pass; else echo fail; fi; }
# Whether a step's JSON summary says "pass": true.
json_pass() { python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["pass"] else 1)' "$1" 2>/dev/null; }
json_or_null() { if [ -s "$1" ] && python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$1" 2>/dev/null; then cat "$1"; else echo null; fi; }

# ---- 1: device and versions ---------------------------------------------------------------------------------
t0=$(date +%s)
"$PYTHON" - >"$WORK/versions.json" 2>>"$LOG" <<'EOF' || echo '{"torch": null}' >"$WORK/versions.json"
import json, platform, torch
d = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
     "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
     "cuda_available": torch.cuda.is_available()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    d.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
             multiprocessors=p.multi_processor_count)
print(json.dumps(d))
EOF
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$WORK/smi.txt" 2>/dev/null || echo "no nvidia-smi" >"$WORK/smi.txt"
timeout 60 "$HISTOFED" device --json >"$WORK/device.json" 2>>"$LOG"
dev_rc=$?
CUDA=$(python3 -c 'import json,sys; print("yes" if json.load(open(sys.argv[1])).get("cuda_available") else "no")' "$WORK/device.json" 2>/dev/null || echo no)
case "${GPU_CHECK_DEVICE:-auto}" in
    cpu) DEVICE=cpu ;;
    cuda) DEVICE=cuda ;;
    *) if [ "$CUDA" = yes ]; then DEVICE=cuda; else DEVICE=cpu; fi ;;
esac
if [ "$DEVICE" = cuda ] && [ "$CUDA" != yes ]; then log "GPU_CHECK_DEVICE=cuda but the binary sees no CUDA device"; fi
python3 - "$WORK" "$DEVICE" >"$WORK/step1.json" <<'EOF'
import json, sys, os
w, device = sys.argv[1], sys.argv[2]
def load(p):
    try:
        return json.load(open(os.path.join(w, p)))
    except Exception:
        return None
print(json.dumps({"mode": device, "histofed": load("device.json"), "python_side": load("versions.json"),
                  "nvidia_smi": open(os.path.join(w, "smi.txt")).read().strip(),
                  "uname": os.uname().release}))
EOF
status=fail
[ $dev_rc -eq 0 ] && status=pass
if [ "$DEVICE" = cuda ] && [ "$CUDA" != yes ]; then status=fail; fi
record device "$status" $(($(date +%s) - t0)) "$(cat "$WORK/step1.json")"
log "mode: $DEVICE ($(cat "$WORK/smi.txt"))"

# Sizes per mode: the paper's models on the GPU, the tiny ones on the CPU fallback.
if [ "$DEVICE" = cuda ]; then
    P4_ARGS=(--preset paper --batch 32 --steps 5 --warmup 2 --repeats 2 --threads 4)
    FED_SET='"model.preset=paper", "model.image_size=128", "model.device=cuda", "federation.local_steps=120",
             "federation.local_checkpoint_every=20", "federation.batch_size=32", "data.per_class=64",
             "runtime.threads=2"'
    OOM_SET='"model.preset=paper", "model.image_size=128", "model.gan=acgan", "model.discriminator=vit",
             "model.device=cuda", "federation.sites=1", "federation.min_sites=1", "federation.rounds=1",
             "federation.local_steps=3", "federation.batch_size=8192", "federation.min_batch_size=64",
             "data.per_class=2048", "data.num_classes=4", "data.val_fraction=0.0", "data.test_fraction=0.05",
             "runtime.threads=4"'
    TRAIN_ARGS=(--set model.preset=paper --set model.image_size=64 --set federation.batch_size=64
                --set data.per_class=256 --steps 100000 --every 200 --max-minutes 2.5 --device cuda)
    TIMEOUTS=(120 150 90 200)
else
    P4_ARGS=(--preset tiny --batch 16 --steps 2 --warmup 1 --repeats 1 --threads 1)
    FED_SET='"model.device=cpu", "federation.local_steps=150", "federation.local_checkpoint_every=25"'
    OOM_SET=''
    TRAIN_ARGS=(--set model.preset=tiny --set model.image_size=32 --set data.per_class=32 --steps 100000
                --every 20 --max-minutes 0.3 --device cpu)
    TIMEOUTS=(120 150 120 120)
fi

# ---- 2: P4 on the device: tch vs PyTorch, interleaved --------------------------------------------------------
t0=$(date +%s)
BENCH_PY=$(command -v "$PYTHON" || echo "$PYTHON")
# A python without torch: the tch column alone, and the table says the PyTorch side did not run.
"$BENCH_PY" -c 'import torch' 2>/dev/null || { log "$PYTHON has no torch: P4 without its PyTorch column"; BENCH_PY=/nonexistent/python-with-torch; }
timeout "${TIMEOUTS[0]}" "$HISTOFED" bench models "${P4_ARGS[@]}" --device "$DEVICE" --python "$BENCH_PY" \
    --out "$OUT/p4.md" --json "$WORK/p4.json" >>"$LOG" 2>&1
rc=$?
record p4 "$(verdict $rc $rc)" $(($(date +%s) - t0)) "$(json_or_null "$WORK/p4.json")"
[ -s "$WORK/p4.json" ] && cp "$WORK/p4.json" "$OUT/p4.json"

# ---- 3: a federation on the device; a site killed mid-round resumes from its local checkpoint ----------------
t0=$(date +%s)
cat >"$WORK/gpu-kill-site.toml" <<EOF
about = "2 sites on the device; site 1 SIGKILLed in round 2 once it has a local checkpoint, restarted: it resumes the round from it"
set = [ "federation.sites=2", "federation.min_sites=2", "federation.rounds=3", $FED_SET ]

[[fault]]
kind = "kill-site"
site = 1
after_round = 1
at_local_checkpoint = true
restart_after_secs = 1.0

[expect]
timeout_secs = $((${TIMEOUTS[1]} - 10))
EOF
timeout "${TIMEOUTS[1]}" "$HISTOFED" chaos run "$WORK/gpu-kill-site.toml" --no-baseline --out "$WORK/chaos" >>"$LOG" 2>&1
rc=$?
python3 - "$WORK/chaos" "$rc" >"$WORK/fed.json" <<'EOF'
import json, sys, os
d, rc = sys.argv[1], int(sys.argv[2])
out = {"chaos_exit": rc}
try:
    out["chaos"] = json.load(open(os.path.join(d, "chaos-report.json")))
except Exception as e:
    out["chaos"] = f"no chaos report: {e}"
try:
    rep = json.load(open(os.path.join(d, "gpu-kill-site", "run", "report.json")))
    rounds = rep.get("rounds", [])
    out["rounds"] = [r["round"] for r in rounds]
    out["site1_resumed_from_step"] = {r["round"]: c.get("resumed_from_step", 0)
                                      for r in rounds for c in r.get("contributors", []) if c.get("site_id") == 1}
    out["train_secs"] = {r["round"]: [round(c.get("train_secs", 0), 2) for c in r.get("contributors", [])] for r in rounds}
    out["events"] = [f'{e.get("kind")}: {e.get("detail")}' for e in rep.get("events", [])][:20]
except Exception as e:
    out["report_error"] = str(e)
resumed = any(v > 0 for v in out.get("site1_resumed_from_step", {}).values())
once = out.get("rounds") == sorted(set(out.get("rounds", []))) and len(out.get("rounds", [])) == 3
out["resumed_mid_round"] = resumed
out["every_round_once"] = once
out["pass"] = rc == 0 and resumed and once
print(json.dumps(out))
EOF
json_pass "$WORK/fed.json"; ok=$?
record federation "$(verdict $rc $ok)" $(($(date +%s) - t0)) "$(json_or_null "$WORK/fed.json")"

# ---- 4: out of memory: the batch halved until it fits, training goes on ---------------------------------------
t0=$(date +%s)
if [ -n "$OOM_SET" ]; then
    cat >"$WORK/gpu-oom.toml" <<EOF
about = "one site, a batch of 8192 at 128 px with a ViT discriminator: a real CUDA out-of-memory, the batch halved until it fits"
set = [ $OOM_SET ]

[expect]
timeout_secs = $((${TIMEOUTS[2]} - 10))
EOF
    SCEN=gpu-oom
else
    cat >"$WORK/cpu-oom.toml" <<EOF
about = "CPU fallback: site 0 runs out of memory (injected) in round 1 until its batch is 4; retried with half the batch"
set = [ "federation.sites=2", "federation.min_sites=2", "federation.rounds=2", "federation.min_batch_size=2", "model.device=cpu" ]

[[inject]]
kind = "trainer-oom"
site = 0
round = 1
fits_batch = 4
EOF
    SCEN=cpu-oom
fi
timeout "${TIMEOUTS[2]}" "$HISTOFED" chaos run "$WORK/$SCEN.toml" --no-baseline --out "$WORK/oom" >>"$LOG" 2>&1
rc=$?
python3 - "$WORK/oom/$SCEN" "$rc" "$SCEN" >"$WORK/oom.json" <<'EOF'
import json, sys, os, glob
d, rc, scen = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = {"chaos_exit": rc, "kind": "real" if scen == "gpu-oom" else "injected"}
try:
    rep = json.load(open(os.path.join(d, "run", "report.json")))
    c = [c for r in rep.get("rounds", []) for c in r.get("contributors", [])]
    out["contributors"] = [{k: x.get(k) for k in ("site_id", "batch_size", "oom_retries", "steps", "train_secs")} for x in c]
    out["rounds"] = len(rep.get("rounds", []))
except Exception as e:
    out["report_error"] = str(e)
lines = []
for p in sorted(glob.glob(os.path.join(d, "logs", "site-*.log"))):
    for l in open(p, errors="replace"):
        if "out of memory" in l:
            lines.append(l.strip()[:300])
out["site_log_lines"] = lines[:12]
retried = any((x.get("oom_retries") or 0) > 0 for x in out.get("contributors", []))
out["pass"] = rc == 0 and retried
print(json.dumps(out))
EOF
json_pass "$WORK/oom.json"; ok=$?
record oom "$(verdict $rc $ok)" $(($(date +%s) - t0)) "$(json_or_null "$WORK/oom.json")"

# ---- 5: a time-boxed centralized ACGAN x ViT run with its sample grid -----------------------------------------
t0=$(date +%s)
timeout "${TIMEOUTS[3]}" "$HISTOFED" train --centralized --set model.gan=acgan --set model.discriminator=vit \
    --set runtime.threads=4 "${TRAIN_ARGS[@]}" --out "$WORK/train" >>"$LOG" 2>&1
rc=$?
last_png=$(ls "$WORK"/train/samples/*.png 2>/dev/null | sort -V | tail -1)
[ -n "$last_png" ] && cp "$last_png" "$OUT/acgan-vit-grid.png"
[ $rc -eq 0 ] && [ -n "$last_png" ]; ok=$?
record train "$(verdict $rc $ok)" $(($(date +%s) - t0)) "$(json_or_null "$WORK/train/train.json")"

# ---- summary -----------------------------------------------------------------------------------------------
python3 - "$WORK/steps" "$DEVICE" $(($(date +%s) - START)) >"$OUT/gpu-check.json" <<'EOF'
import json, sys, os, datetime
d, device, secs = sys.argv[1], sys.argv[2], int(sys.argv[3])
steps = [json.load(open(os.path.join(d, f"{n}.json"))) for n in ("device", "p4", "federation", "oom", "train")
         if os.path.exists(os.path.join(d, f"{n}.json"))]
print(json.dumps({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "mode": device, "total_secs": secs, "passed": all(s["status"] == "pass" for s in steps),
                  "steps": steps}, indent=1))
EOF
log "results: $OUT/gpu-check.json ($(ls "$OUT" | tr '\n' ' '))"
python3 - "$OUT/gpu-check.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
for s in r["steps"]:
    print(f"  {s['step']:<11} {s['status']:<8} {s['secs']:>4} s")
print(f"  {'all' if r['passed'] else 'NOT all'} passed in {r['total_secs']} s ({r['mode']})")
sys.exit(0 if r["passed"] else 1)
EOF
