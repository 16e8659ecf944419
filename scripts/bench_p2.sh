#!/usr/bin/env bash
# P2 of BENCHMARKS.md: seconds per round of Flower 1.42 (deployment engine, no-op ClientApp, FedAvg) with K
# SuperNodes and P float32 parameters, on 127.0.0.1. histofed's side of P2 is `histofed bench federation`.
#
#   scripts/bench_p2.sh [K] [P] [ROUNDS] [OUT_JSON]     defaults: 8 10000000 22 bench-p2-flower.json
#
# Idempotent: (re)uses .venv-flower (created with flwr==1.42.0 from PyPI if missing), a fresh FLWR_HOME and state
# per run. Bounded: the run is given BENCH_P2_TIMEOUT seconds (default 1800). Every process it starts (SuperLink,
# SuperNodes, the memory sampler) is killed on exit, by its pid, also on failure or Ctrl-C.
set -euo pipefail

K=${1:-8}
P=${2:-10000000}
ROUNDS=${3:-22}
OUT=${4:-bench-p2-flower.json}
[[ $OUT = /* ]] || OUT=$PWD/$OUT
TIMEOUT=${BENCH_P2_TIMEOUT:-1800}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${FLOWER_VENV:-$ROOT/.venv-flower}
APP=$ROOT/bench/flower
PORT=${BENCH_P2_PORT:-18000}

if [[ ! -x $VENV/bin/flwr ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "flwr==1.42.0" numpy
fi

WORK=$(mktemp -d /tmp/histofed-p2-flower.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        # The SuperLink/SuperNodes start their app processes in their own process group.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    sleep 1
    for pid in "${PIDS[@]}"; do
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        { wait "$pid"; } 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# The SuperLink and SuperNodes start `flower-superexec` (and the apps) by name.
export PATH=$VENV/bin:$PATH FLWR_HOME=$WORK/flwr-home OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
mkdir -p "$FLWR_HOME"
cat >"$FLWR_HOME/config.toml" <<EOF
[superlink]
default = "bench"

[superlink.bench]
address = "127.0.0.1:$PORT"
insecure = true
EOF

# Each process in its own session (setsid), so that cleanup can kill it with all its children.
setsid "$VENV/bin/flower-superlink" --insecure --host 127.0.0.1 --port "$PORT" \
    --disable-runtime-dependency-installation >"$WORK/superlink.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
    (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.2
done
for ((i = 0; i < K; i++)); do
    setsid "$VENV/bin/flower-supernode" --insecure --superlink "127.0.0.1:$PORT" --port $((PORT + 100 + i)) \
        --node-config "partition-id=$i num-partitions=$K" >"$WORK/supernode-$i.log" 2>&1 &
    PIDS+=($!)
done

# Peak RSS (KiB) per role: the largest single process of each kind, and the sum over all of them, every 0.2 s.
sample_rss() {
    local -A peak=([superlink]=0 [superexec]=0 [serverapp]=0 [supernode]=0 [clientapp]=0 [total]=0)
    while :; do
        local -A now=([superlink]=0 [superexec]=0 [serverapp]=0 [supernode]=0 [clientapp]=0)
        local total=0 pid rss cmd role
        while read -r pid rss cmd; do
            case $cmd in
            *flower-superlink*) role=superlink ;;
            *flower-superexec*) role=superexec ;;
            *flwr-serverapp*) role=serverapp ;;
            *flower-supernode*) role=supernode ;;
            *flwr-clientapp*) role=clientapp ;;
            *) continue ;;
            esac
            ((rss > now[$role])) && now[$role]=$rss
            total=$((total + rss))
        done < <(ps -eo pid=,rss=,args= 2>/dev/null)
        for role in "${!now[@]}"; do ((now[$role] > peak[$role])) && peak[$role]=${now[$role]}; done
        ((total > peak[total])) && peak[total]=$total
        echo "${peak[superlink]} ${peak[superexec]} ${peak[serverapp]} ${peak[supernode]} ${peak[clientapp]} ${peak[total]}" \
            >"$WORK/rss.peak"
        sleep 0.2
    done
}
sample_rss &
PIDS+=($!)

TIMINGS=$WORK/timings.json
cd "$APP"
timeout "$TIMEOUT" "$VENV/bin/flwr" run . bench --stream \
    --run-config "num-server-rounds=$ROUNDS params=$P min-nodes=$K timings-file=\"$TIMINGS\"" \
    >"$WORK/flwr-run.log" 2>&1 || true
if [[ ! -s $TIMINGS ]]; then
    echo "no timings written; last log lines:" >&2
    tail -n 30 "$WORK/flwr-run.log" "$WORK/superlink.log" "$WORK/supernode-0.log" >&2 || true
    exit 1
fi
read -r -a RSS <"$WORK/rss.peak"
"$VENV/bin/python" - "$TIMINGS" "$OUT" "${RSS[@]}" <<'EOF'
import json, statistics, sys
timings, out = sys.argv[1], sys.argv[2]
roles = ["superlink", "superexec", "serverapp", "supernode", "clientapp", "all_processes_sum"]
peak_mb = {r: int(kib) * 1024 / 1e6 for r, kib in zip(roles, sys.argv[3:])}
t = json.load(open(timings))
counted = t["gaps"][2:]
t.update(
    counted=counted,
    median_secs=statistics.median(counted),
    min_secs=min(counted),
    max_secs=max(counted),
    peak_rss_mb=peak_mb,
)
json.dump(t, open(out, "w"), indent=1)
print(f"flower K={t['nodes']} P={t['params']}: median {t['median_secs']:.2f} s/round "
      f"({t['min_secs']:.2f}-{t['max_secs']:.2f}, {len(counted)} rounds); peak RSS MB (largest process of each "
      f"kind): " + ", ".join(f"{r} {v:.0f}" for r, v in peak_mb.items()))
EOF
