#!/usr/bin/env bash
# End-to-end in a real single-node Kubernetes (shared/k8s node mode, pods really run): package our binary as an image,
# deploy the cpu overlay with a tiny run, let a few rounds complete, hard-kill site pods with `histofed chaos
# kill-pods` (and the server pod once), and check from the run's report that the federation finished every round,
# resumed the server from its checkpoint, and got the killed sites back. The cluster is always torn down (trap).
#
#   scripts/e2e_k8s.sh            # needs root, ~1 GB RAM; first run builds the node binaries (~12 min)
#
# Environment: E2E_BIN (default target/release/histofed, else target/debug), E2E_ROUNDS (8), E2E_KILLS (2),
# E2E_KILL_EVERY (15s), E2E_KILL_SERVER (1), E2E_TIMEOUT (900 s for the whole run), E2E_KEEP=1 leaves the cluster up.
# Output (logs, report, chaos summary): target/k8s-e2e/.
#
# Node-mode specifics handled by a generated overlay on top of overlays/cpu (target/k8s-e2e/overlay):
#  - the image is imported, not pulled: localhost/histofed:e2e with imagePullPolicy Never;
#  - there is no storage provisioner: site volumes become emptyDir, the server's run folder a hostPath
#    (target/k8s-e2e/run, owned by uid 10001) so the report can be read here and survives the server pod's kill;
#  - v1.20 lacks policy/v1: the PodDisruptionBudget is applied as policy/v1beta1;
#  - no DNS: sites find the server through HISTOFED_SERVER_SERVICE_HOST/_PORT_CLUSTER (the base does that anyway);
#  - pods cannot reach the API server: the server's pod watch (--k8s-site-selector) must degrade to a warning.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=${HISTOFED_SHARED:-$root/../shared}
K=$shared/k8s
out=$root/target/k8s-e2e
rounds=${E2E_ROUNDS:-8}
kills=${E2E_KILLS:-2}
kill_every=${E2E_KILL_EVERY:-15s}
kill_server=${E2E_KILL_SERVER:-1}
deadline=$(( $(date +%s) + ${E2E_TIMEOUT:-900} ))
bin=${E2E_BIN:-}
if [ -z "$bin" ]; then
  if [ -x "$root/target/release/histofed" ]; then bin=$root/target/release/histofed; else bin=$root/target/debug/histofed; fi
fi
[ -x "$bin" ] || { echo "e2e: no binary at $bin (cargo build --release --bin histofed)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "e2e: node mode needs root" >&2; exit 1; }
t0=$(date +%s.%N)
log() { printf '[e2e %6.1fs] %s\n' "$(echo "$(date +%s.%N) - $t0" | bc)" "$*"; }
left() { echo $(( deadline - $(date +%s) )); }

# --- 0. offline checks and tools: validates every overlay and creates .venv-k8s (kubectl 1.37 for kustomize)
"$root/scripts/k8s_validate.sh" >/dev/null
kustomize() { "$root/.venv-k8s/bin/kubectl" kustomize "$@"; }

# --- 1. the cluster's binaries and node files (cached under $K8S_HOME), then the image
nice -n 10 bash "$K/build.sh" --node
. "$K/node-env.sh"    # PATH (kubectl 1.20, ctr), KUBECONFIG, SOCK, W
[ -f "$W/images/pause.tar" ] || bash "$K/node-prep.sh"
rm -rf "$out" && mkdir -p "$out/run" "$out/logs" "$out/overlay"
"$root/scripts/k8s_image.sh" "$bin" "$out/histofed.tar" localhost/histofed:e2e
chown 10001:10001 "$out/run"

# --- 2. the node; torn down whatever happens from here on
collect() {
  kubectl -n histofed get pods -o wide > "$out/logs/pods.txt" 2>&1 || true
  kubectl -n histofed get events --sort-by=.lastTimestamp > "$out/logs/events.txt" 2>&1 || true
  for p in $(kubectl -n histofed get pods -o name 2>/dev/null | sed 's|pod/||'); do
    kubectl -n histofed logs "$p" > "$out/logs/$p.log" 2>&1 || true
    kubectl -n histofed logs "$p" --previous > "$out/logs/$p.previous.log" 2>/dev/null || true
  done
}
cleanup() {
  rc=$?
  collect
  if [ "${E2E_KEEP:-0}" = 1 ]; then log "E2E_KEEP=1: cluster left running; stop it with $K/node-down.sh"
  else bash "$K/node-down.sh" > "$out/logs/node-down.log" 2>&1 || log "node-down.sh failed (see $out/logs/node-down.log)"; fi
  [ $rc = 0 ] && log "PASS (outputs in $out)" || log "FAIL rc=$rc (logs in $out/logs)"
}
trap cleanup EXIT
bash "$K/node-up.sh" > "$out/logs/node-up.log" 2>&1
ctr -a "$SOCK" -n k8s.io images import "$out/histofed.tar" >/dev/null
log "node up, image imported: $(ctr -a "$SOCK" -n k8s.io images ls -q | grep histofed)"

# --- 3. secrets from histofed certs, then the overlay
"$bin" certs all --dir "$out/certs" --sites 3 >/dev/null
kubectl create namespace histofed >/dev/null
sites_files=$(for i in 0 1 2; do printf -- '--from-file=%s ' "$out/certs/site-$i.pem" "$out/certs/site-$i.key"; done)
kubectl -n histofed create secret generic histofed-tls-server --from-file="$out/certs/ca.pem" \
  --from-file="$out/certs/server.pem" --from-file="$out/certs/server.key" >/dev/null
# shellcheck disable=SC2086
kubectl -n histofed create secret generic histofed-tls-sites --from-file="$out/certs/ca.pem" $sites_files >/dev/null
kubectl -n histofed create secret generic histofed-cookie --from-literal=cookie="e2e-$(od -An -tx8 -N8 /dev/urandom | tr -d ' ')" >/dev/null

sed -e "s/^rounds = .*/rounds = $rounds/" -e 's/^local_steps = .*/local_steps = 5/' -e 's/^per_class = .*/per_class = 48/' \
    -e 's/^join_timeout_secs = .*/join_timeout_secs = 120/' -e 's/^round_deadline_secs = .*/round_deadline_secs = 60/' \
    "$root/k8s/base/config.toml" > "$out/overlay/config.toml"
cat > "$out/overlay/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../../k8s/overlays/cpu
images:
  - name: histofed
    newName: localhost/histofed
    newTag: e2e
configMapGenerator:
  - name: histofed-config
    behavior: replace
    files:
      - config.toml
patches:
  - path: node-mode.yaml
  - target: {kind: StatefulSet, name: histofed-site}
    patch: |-
      - op: remove
        path: /spec/volumeClaimTemplates
  - target: {kind: PersistentVolumeClaim, name: histofed-server-checkpoints}
    patch: |-
      \$patch: delete
      apiVersion: v1
      kind: PersistentVolumeClaim
      metadata:
        name: histofed-server-checkpoints
EOF
cat > "$out/overlay/node-mode.yaml" <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: histofed-server
spec:
  template:
    spec:
      containers:
        - name: server
          imagePullPolicy: Never
      volumes:
        - name: checkpoints
          persistentVolumeClaim: null
          hostPath:
            path: $out/run
            type: Directory
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: histofed-site
spec:
  template:
    spec:
      containers:
        - name: site
          imagePullPolicy: Never
      volumes:
        - name: data
          emptyDir: {}
        - name: checkpoints
          emptyDir: {}
EOF
kustomize "$out/overlay" > "$out/rendered.yaml"
python3 - "$out/rendered.yaml" "$(kubectl api-versions)" <<'PY'
import sys, yaml
path, served = sys.argv[1], set(sys.argv[2].split())
docs = [d for d in yaml.safe_load_all(open(path)) if d]
for d in docs:
    if d["apiVersion"] == "policy/v1" and "policy/v1" not in served:
        d["apiVersion"] = "policy/v1beta1"
yaml.safe_dump_all(docs, open(path, "w"))
PY
kubectl apply -f "$out/rendered.yaml" > "$out/logs/apply.txt"
log "applied overlay (cpu + node mode, $rounds rounds)"

# --- 4. wait until the server and the three sites are Ready, then for two completed rounds
ready() { [ "$(kubectl -n histofed get pod "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; }
server_pod() { kubectl -n histofed get pods -l app=histofed-server -o jsonpath='{.items[0].metadata.name}' 2>/dev/null; }
until ready "$(server_pod)" && ready histofed-site-0 && ready histofed-site-1 && ready histofed-site-2; do
  [ "$(left)" -gt 0 ] || { log "timed out waiting for Ready pods"; exit 1; }
  sleep 1
done
log "server and 3 sites Ready"
report=$out/run/report.json
rounds_done() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(len(r["rounds"]), int(r.get("finished", False)))' "$report" 2>/dev/null || echo "0 0"; }
wait_rounds() { # N: until at least N rounds are in the report (or it finished)
  while :; do
    read -r n fin < <(rounds_done)
    [ "$n" -ge "$1" ] || [ "$fin" = 1 ] && return 0
    [ "$(left)" -gt 0 ] || { log "timed out waiting for round $1 (have $n)"; return 1; }
    sleep 2
  done
}
wait_rounds 2
log "2 rounds completed before any chaos"

# --- 5. chaos: hard-kill site pods from outside (the host's kubeconfig; pods cannot reach the API server here)
"$bin" --log-format json chaos kill-pods --namespace histofed --selector app=histofed-site \
  --every "$kill_every" --count "$kills" --grace 0 --seed 7 > "$out/chaos.json" 2> "$out/logs/chaos.log"
log "chaos: $(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(", ".join(k["pod"] + "@" + str(k["unix_ms"]) for k in s["kills"]))' "$out/chaos.json")"
server_kill_ms=0
if [ "$kill_server" = 1 ]; then
  old=$(server_pod)
  server_kill_ms=$(date +%s%3N)
  kubectl -n histofed delete pod "$old" --grace-period=0 --force >/dev/null 2>&1
  log "killed server pod $old"
  until p=$(server_pod) && [ -n "$p" ] && [ "$p" != "$old" ] && ready "$p"; do
    [ "$(left)" -gt 0 ] || { log "timed out waiting for the new server"; exit 1; }
    sleep 1
  done
  log "new server $(server_pod) Ready"
fi

# --- 6. the run must finish every round; check the report against the kills
wait_rounds "$rounds"
until [ "$(rounds_done | cut -d' ' -f2)" = 1 ]; do
  [ "$(left)" -gt 0 ] || { log "timed out waiting for the run to finish"; exit 1; }
  sleep 2
done
cp "$report" "$out/report.json"
python3 - "$out/report.json" "$out/chaos.json" "$rounds" "$server_kill_ms" "$kills" <<'PY'
import json, sys
report, chaos = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
rounds, server_kill_ms, wanted_kills = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
fail = []
done = [r["round"] for r in report["rounds"]]
if not report.get("finished"):
    fail.append("report not finished")
if sorted(done) != list(range(1, rounds + 1)):
    fail.append(f"rounds in report {done}, expected 1..{rounds}")
if server_kill_ms and not report.get("resumed_from_round"):
    fail.append("the server was killed but the report has no resumed_from_round")
kills = chaos["kills"]
if len(kills) != wanted_kills:
    fail.append(f"chaos made {len(kills)} kills, wanted {wanted_kills}")
# Each killed site must be back: a participant of some round that closed after its kill (round close times from the
# report's events of kind round_completed; without them this check is only printed).
t_round = {e["round"]: e["at_unix_ms"] for e in report.get("events", []) if e.get("kind") == "round_completed"}
for k in kills:
    site = int(k["pod"].rsplit("-", 1)[1])
    later = [r["round"] for r in report["rounds"] if site in r["participants"] and t_round.get(r["round"], 0) > k["unix_ms"]]
    print(f"killed {k['pod']} at {k['unix_ms']}: participated again in rounds {later or 'none'}")
    if t_round and not later:
        fail.append(f"site {site} never took part again after its kill")
for r in report["rounds"]:
    print(f"round {r['round']}: attempts {r['attempts']} participants {r['participants']} dropped {r['dropped']}")
print("resumed_from_round:", report.get("resumed_from_round"))
if fail:
    sys.exit("e2e report check FAILED: " + "; ".join(fail))
print("e2e report check ok")
PY
