#!/usr/bin/env bash
# End-to-end in a real single-node Kubernetes (shared/k8s node mode: pods really run): package our binary as an image,
# deploy the cpu overlay with a short run, hard-kill site pods during training with `histofed chaos kill-pods
# --grace 0`, wait until every killed site is back and has contributed again, then hard-kill the server pod once, and
# check that the server resumed from its checkpoint and the run completed every round exactly once. Prints the
# recovery timings. The cluster is always torn down (trap, also on failure or Ctrl-C).
#
#   sudo scripts/e2e_k8s.sh                               # needs root; ~2-3 min once the node binaries exist
#   HISTOFED_BIN=/tmp/histofed E2E_OUT=/tmp/k8s-e2e scripts/e2e_k8s.sh
#
# Environment:
#   HISTOFED_BIN     binary to package (default target/release/histofed, else target/debug/histofed; E2E_BIN too)
#   E2E_OUT          outputs: logs, report, chaos summaries, timings (default target/k8s-e2e)
#   E2E_ROUNDS (30)  E2E_LOCAL_STEPS (60)  rounds of the run and local steps per round (~2-3 s a round here)
#   E2E_KILLS (2)    E2E_KILL_EVERY (8s)   site pods killed by chaos, and the time between kills
#   E2E_KILL_SERVER (1)                    also kill the server pod once (0 = no)
#   E2E_TIMEOUT (600)                      seconds for the whole run after the image is built; every wait is bounded
#   E2E_KEEP=1                             leave the cluster up (stop it with shared/k8s/node-down.sh)
#   E2E_BUILD=0                            do not call shared/k8s/build.sh --node (binaries already built)
#   E2E_SCENARIO=nodeloss                  instead of pod kills: two nodes, node 2 killed, then frozen and resumed
#                                          (scripts/e2e_k8s_nodeloss.sh; `make e2e-k8s-nodeloss`)
#   E2E_REMEDIATE=0                        (nodeloss) the same RBAC, remediation switched off: node 2 killed, watched
#                                          for E2E_OBSERVE (60) s, then back; the timeline without remediation
#
# Node-mode specifics, handled by a generated overlay on top of overlays/cpu ($E2E_OUT/overlay):
#  - the image is the Dockerfile's (scripts/image.sh, buildah), imported, not pulled: localhost/histofed:e2e with
#    imagePullPolicy Never;
#  - there is no storage provisioner: the server's run folder is a hostPath ($E2E_OUT/run, uid 10001), so its
#    checkpoints survive the server pod's kill and the report can be read from here; each site's `checkpoints`
#    volume is a hostPath per pod ($E2E_OUT/sites/<pod>, subPathExpr), so a replaced site pod finds its local state
#    as with the StatefulSet's PVCs; `data` is an emptyDir;
#  - v1.20 lacks policy/v1: the PodDisruptionBudget is applied as policy/v1beta1;
#  - probes every second (the base's 2-5 s periods only delay Ready here);
#  - no DNS: sites find the server through HISTOFED_SERVER_SERVICE_HOST/_PORT_CLUSTER (the base does that anyway);
#  - pods cannot reach the API server: the server's pod watch (--k8s-site-selector) degrades to a warning, chaos
#    runs from this host with the admin kubeconfig; NetworkPolicies are accepted but not enforced (bridge CNI).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=${HISTOFED_SHARED:-}
if [ -z "$shared" ]; then
  # Beside a checkout in /work, or the machine's copy for a clone elsewhere (CI clones into a temporary folder).
  for c in "$root/../shared" /work/shared; do
    if [ -x "$c/k8s/node-up.sh" ]; then shared=$c; break; fi
  done
fi
[ -n "$shared" ] || { echo "e2e: no shared/k8s kit found (set HISTOFED_SHARED)" >&2; exit 1; }
export HISTOFED_SHARED=$shared
K=$shared/k8s
out=$(realpath -m "${E2E_OUT:-$root/target/k8s-e2e}")
rounds=${E2E_ROUNDS:-30}
steps=${E2E_LOCAL_STEPS:-60}
kills=${E2E_KILLS:-2}
kill_every=${E2E_KILL_EVERY:-8s}
kill_server=${E2E_KILL_SERVER:-1}
scenario=${E2E_SCENARIO:-pods}
case "$scenario" in
  pods) ;;
  # Enough rounds to outlast both node experiments; the run is stopped after them (see e2e_k8s_nodeloss.sh).
  nodeloss) rounds=${E2E_ROUNDS:-1000}; kills=0; kill_server=0; remediate=${E2E_REMEDIATE:-1} ;;
  *) echo "e2e: E2E_SCENARIO must be pods or nodeloss, not '$scenario'" >&2; exit 2 ;;
esac
bin=${HISTOFED_BIN:-${E2E_BIN:-}}
if [ -z "$bin" ]; then
  if [ -x "$root/target/release/histofed" ]; then bin=$root/target/release/histofed; else bin=$root/target/debug/histofed; fi
fi
[ -x "$bin" ] || { echo "e2e: no binary at $bin (cargo build --release --bin histofed, or HISTOFED_BIN=)" >&2; exit 1; }
bin=$(realpath "$bin")
[ "$(id -u)" = 0 ] || { echo "e2e: node mode needs root" >&2; exit 1; }
# Node mode and envtest mode share ports and state: refuse to start beside a running cluster of either kind.
# A cluster stopped just before (CI runs the API-server tests first) may take a few seconds to exit: wait up to 30 s,
# ignoring zombies.
cluster_procs() {
  ps -eo pid=,stat=,args= | awk '$2 !~ /^Z/ { n = split($3, p, "/"); c = p[n];
    if (c ~ /^(kube-apiserver|kubelet|etcd|containerd|kube-proxy|kube-scheduler)$/) print }'
}
for _ in $(seq 1 60); do
  others=$(cluster_procs)
  [ -z "$others" ] && break
  sleep 0.5
done
if [ -n "$others" ]; then
  echo "e2e: a cluster (envtest or node mode) is already running; stop it first (down.sh / node-down.sh):" >&2
  echo "$others" >&2
  exit 1
fi
for t in python3 bc ldd readelf; do command -v $t >/dev/null || { echo "e2e: $t missing" >&2; exit 1; }; done
t0=$(date +%s.%N)
log() { printf '[e2e %6.1fs] %s\n' "$(echo "$(date +%s.%N) - $t0" | bc)" "$*"; }
now_ms() { date +%s%3N; }

# --- 0. offline checks and tools: validates every overlay and creates .venv-k8s (kubectl 1.37 for kustomize)
"$root/scripts/k8s_validate.sh" >/dev/null
kustomize() { "$root/.venv-k8s/bin/kubectl" kustomize "$@"; }

# --- 1. the cluster's binaries and node files (cached under $K8S_HOME), then the image
[ "${E2E_BUILD:-1}" = 0 ] || nice -n 10 bash "$K/build.sh" --node > /dev/null
. "$K/node-env.sh"    # PATH (kubectl 1.20, ctr), KUBECONFIG, SOCK, W
[ -x "$NB/kubelet" ] || { echo "e2e: no kubelet in $NB: run $K/build.sh --node" >&2; exit 1; }
[ -f "$W/images/pause.tar" ] || bash "$K/node-prep.sh" > /dev/null
rm -rf "$out" && mkdir -p "$out/run" "$out/logs" "$out/overlay" "$out/sites"
# The image users get: the Dockerfile built with buildah (`make image`); E2E_IMAGE=handpacked packs the binary and
# its ldd closure by hand instead (scripts/k8s_image.sh, the fallback where buildah cannot run).
if [ "${E2E_IMAGE:-dockerfile}" = handpacked ]; then
  "$root/scripts/k8s_image.sh" "$bin" "$out/histofed.tar" localhost/histofed:e2e > "$out/logs/image.log" 2>&1 \
    || { cat "$out/logs/image.log" >&2; exit 1; }
  log "image (hand-packed): $(sed -n 's/^k8s_image: //p' "$out/logs/image.log")"
else
  HISTOFED_BIN=$bin IMAGE_REF=localhost/histofed:e2e IMAGE_OUT=$out/image "$root/scripts/image.sh" \
    > "$out/logs/image.log" 2>&1 || { cat "$out/logs/image.log" >&2; exit 1; }
  mv "$out/image/histofed.tar" "$out/histofed.tar"
  log "image (Dockerfile, buildah): $(sed -n 's/^image: //p' "$out/logs/image.log" | tail -2 | paste -sd' ')"
fi
chown 10001:10001 "$out/run"
for i in 0 1 2; do mkdir -p "$out/sites/histofed-site-$i"; chown 10001:10001 "$out/sites/histofed-site-$i"; done
deadline=$(( $(date +%s) + ${E2E_TIMEOUT:-600} ))
left() { echo $(( deadline - $(date +%s) )); }

# --- 2. the node; torn down whatever happens from here on
bg_pids=()
collect() {
  kubectl -n histofed get pods -o wide > "$out/logs/pods.txt" 2>&1 || true
  kubectl -n histofed get events --sort-by=.lastTimestamp > "$out/logs/events.txt" 2>&1 || true
  for p in $(kubectl -n histofed get pods -o name 2>/dev/null | sed 's|pod/||'); do
    kubectl -n histofed logs "$p" > "$out/logs/$p.log" 2>&1 || true
    kubectl -n histofed logs "$p" --previous > "$out/logs/$p.previous.log" 2>/dev/null || rm -f "$out/logs/$p.previous.log"
  done
}
cleanup() {
  rc=$?
  trap - EXIT INT TERM
  for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  collect
  [ -f "$out/run/report.json" ] && cp "$out/run/report.json" "$out/report.json"
  if [ "${E2E_KEEP:-0}" = 1 ]; then log "E2E_KEEP=1: cluster left running; stop it with $K/node-down.sh"
  else
    bash "$K/node-down.sh" > "$out/logs/node-down.log" 2>&1 || log "node-down.sh failed (see $out/logs/node-down.log)"
    log "node down"
  fi
  if [ $rc = 0 ]; then log "PASS (outputs in $out)"; else log "FAIL rc=$rc (logs in $out/logs)"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ "$scenario" = nodeloss ]; then
  # Pods reach the API server (the server's pod and node watch runs in its pod, with its ServiceAccount); a node is
  # NotReady ~16 s after it dies (grace 16 s, sampled every second); node 2's pods keep their source IPs.
  K8S_INCLUSTER_API=1 K8S_NODE_MONITOR_GRACE=16s K8S_NODE_MONITOR_PERIOD=1s K8S_CLUSTER_CIDR=10.88.0.0/14 \
    bash "$K/node-up.sh" > "$out/logs/node-up.log" 2>&1 || { tail -20 "$out/logs/node-up.log" >&2; exit 1; }
else
  bash "$K/node-up.sh" > "$out/logs/node-up.log" 2>&1 || { tail -20 "$out/logs/node-up.log" >&2; exit 1; }
fi
# An OCI archive names its image by tag only (ref.name "e2e"): --base-name gives the repository.
ctr -a "$SOCK" -n k8s.io images import --base-name localhost/histofed "$out/histofed.tar" >/dev/null
log "node up, image imported: $(ctr -a "$SOCK" -n k8s.io images ls | awk '/histofed/ {print $1, $3; exit}')"
if [ "$scenario" = nodeloss ]; then
  D=$K; . "$K/node2-env.sh"   # NODE2, SOCK2, MNT2, node2_pids (node2-env.sh expects the kit in $D)
  # node2-up.sh starts node 2 afresh (a reboot: no images): import after every start.
  node2_start() {
    bash "$K/node2-up.sh" >> "$out/logs/node2-up.log" 2>&1 || { tail -20 "$out/logs/node2-up.log" >&2; return 1; }
    ctr -a "$SOCK2" -n k8s.io images import --base-name localhost/histofed "$out/histofed.tar" >/dev/null
  }
  node2_start
  log "node 2 ($NODE2) up, image imported"
fi

# --- 3. secrets from histofed certs, then the overlay
"$bin" certs all --dir "$out/certs" --sites 3 >/dev/null 2>&1
kubectl create namespace histofed --save-config >/dev/null
sites_files=$(for i in 0 1 2; do printf -- '--from-file=%s ' "$out/certs/site-$i.pem" "$out/certs/site-$i.key"; done)
kubectl -n histofed create secret generic histofed-tls-server --from-file="$out/certs/ca.pem" \
  --from-file="$out/certs/server.pem" --from-file="$out/certs/server.key" >/dev/null
# shellcheck disable=SC2086
kubectl -n histofed create secret generic histofed-tls-sites --from-file="$out/certs/ca.pem" $sites_files >/dev/null
kubectl -n histofed create secret generic histofed-cookie --from-literal=cookie="e2e-$(od -An -tx8 -N8 /dev/urandom | tr -d ' ')" >/dev/null

# A short run: few local steps, small data, quick timeouts (site loss is seen at once: the killed process's
# connections close; heartbeats catch the rest within 2 s).
sed -e "s/^rounds = .*/rounds = $rounds/" -e "s/^local_steps = .*/local_steps = $steps/" -e 's/^per_class = .*/per_class = 48/' \
    -e 's/^join_timeout_secs = .*/join_timeout_secs = 60/' -e 's/^round_deadline_secs = .*/round_deadline_secs = 30/' \
    -e 's/^grace_secs = .*/grace_secs = 5/' -e 's/^heartbeat_secs = .*/heartbeat_secs = 1.0/' \
    -e 's/^grid_per_class = .*/grid_per_class = 2/' -e 's/^eval_every = .*/eval_every = 0/' \
    "$root/k8s/base/config.toml" > "$out/overlay/config.toml"
base_overlay=cpu
if [ "$scenario" = nodeloss ]; then
  # One site is enough for a round (node 2 may hold two of the three); remediation after 10 s of NotReady.
  sed -i -e 's/^min_sites = .*/min_sites = 1/' "$out/overlay/config.toml"
  printf '\n[k8s]\nnode_lost_secs = %s\n' "${E2E_NODE_LOST_SECS:-10}" >> "$out/overlay/config.toml"
  base_overlay=cpu-node-loss
fi
cpu_rel=$(python3 -c 'import os,sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$root/k8s/overlays/$base_overlay" "$out/overlay")
cat > "$out/overlay/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $cpu_rel
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
if [ "$scenario" = nodeloss ] && [ "$remediate" = 0 ]; then
  # The node-loss component's RBAC and node watch stay; only the switch it adds (the server's 8th argument) is turned.
  cat >> "$out/overlay/kustomization.yaml" <<EOF
  - target: {kind: Deployment, name: histofed-server}
    patch: |-
      - op: test
        path: /spec/template/spec/containers/0/args/7
        value: --set=k8s.remediate_lost_nodes=true
      - op: replace
        path: /spec/template/spec/containers/0/args/7
        value: --set=k8s.remediate_lost_nodes=false
EOF
fi
probes='          startupProbe: {periodSeconds: 1, failureThreshold: 120}
          readinessProbe: {periodSeconds: 1, failureThreshold: 2}'
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
$probes
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
$probes
          volumeMounts:
            - mountPath: /var/lib/histofed/checkpoints
              name: checkpoints
              subPathExpr: \$(POD_NAME)
      volumes:
        - name: data
          emptyDir: {}
        - name: checkpoints
          hostPath:
            path: $out/sites
            type: Directory
EOF
if [ "$scenario" = nodeloss ]; then
  # The server stays on node 1; a site's checkpoints live on its node (emptyDir): a replacement on another node
  # starts without them, as with a node-local volume of a dead node.
  cat > "$out/overlay/node-loss.yaml" <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: histofed-server
spec:
  template:
    spec:
      nodeSelector:
        kubernetes.io/hostname: $NODE
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: histofed-site
spec:
  template:
    spec:
      volumes:
        - name: checkpoints
          hostPath: null
          emptyDir: {}
EOF
  echo "  - path: node-loss.yaml" >> "$out/overlay/kustomization.yaml"
fi
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
log "applied overlay ($base_overlay + node mode): $rounds rounds of $steps local steps, 3 sites"

# Round watcher: polls the report (0.2 s) and logs when each round first appears and whether a round ever comes back
# with other content (= run twice). One JSON line per sighting in $out/rounds.jsonl.
python3 - "$out/run/report.json" "$out/rounds.jsonl" <<'PY' &
import json, sys, time
src, dst = sys.argv[1], sys.argv[2]
seen = {}
with open(dst, "a", buffering=1) as f:
    while True:
        try:
            r = json.load(open(src))
        except Exception:
            time.sleep(0.2); continue
        for x in r.get("rounds", []):
            # wall_secs rounded: a resumed server re-reads the report, and a float may come back 1 ulp off
            sig = [x.get("checkpoint"), round(x.get("wall_secs") or 0, 6), sorted(c["site_id"] for c in x.get("contributors", []))]
            if seen.get(x["round"]) != sig:
                f.write(json.dumps({"round": x["round"], "seen_unix_ms": int(time.time() * 1000), "sig": sig,
                                    "again": x["round"] in seen}) + "\n")
                seen[x["round"]] = sig
        time.sleep(0.2)
PY
bg_pids+=($!)

# --- 4. wait until the server and the three sites are Ready, then for two completed rounds
report=$out/run/report.json
ready() { [ "$(kubectl -n histofed get pod "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; }
server_pod() { kubectl -n histofed get pods -l app=histofed-server -o jsonpath='{range .items[*]}{.metadata.deletionTimestamp}{"/"}{.metadata.name}{"\n"}{end}' 2>/dev/null | sed -n 's|^/||p' | head -1; }
# waitfor SECONDS WHAT CMD...: polls CMD every 0.5 s, bounded by SECONDS and the global deadline
waitfor() {
  local limit=$1 what=$2; shift 2
  local until=$(( $(date +%s) + limit ))
  until "$@"; do
    if [ "$(date +%s)" -ge "$until" ] || [ "$(left)" -le 0 ]; then log "timed out after ${limit}s waiting for $what"; return 1; fi
    sleep 0.5
  done
}
all_ready() { local s; s=$(server_pod); [ -n "$s" ] && ready "$s" && ready histofed-site-0 && ready histofed-site-1 && ready histofed-site-2; }
waitfor 180 "the server and 3 sites to be Ready" all_ready
log "server $(server_pod) and 3 sites Ready"
# What runs is the image built above, and it runs with the manifests' read-only root file system: a write outside
# the mounted volumes fails in every pod — to /var/lib/histofed, which the image gives to uid 10001, so only the
# read-only mount can refuse it.
for p in "$(server_pod)" histofed-site-0 histofed-site-1 histofed-site-2; do
  digest=$(kubectl -n histofed get pod "$p" -o jsonpath='{.status.containerStatuses[0].imageID}')
  ro=$(kubectl -n histofed get pod "$p" -o jsonpath='{.spec.containers[0].securityContext.readOnlyRootFilesystem}')
  [ "$ro" = true ] || { log "$p: readOnlyRootFilesystem is '$ro', not true"; exit 1; }
  why=$(kubectl -n histofed exec "$p" -- /bin/sh -c 'echo x > /var/lib/histofed/written-by-e2e' 2>&1) \
    && { log "$p: could write to its root file system"; exit 1; }
  case "$why" in *"Read-only file system"*) ;; *) log "$p: the write failed, but not for a read-only root: $why"; exit 1 ;; esac
  log "$p: image $digest, root file system read-only (a write to /var/lib/histofed, owned by its user, fails)"
done
q() { python3 - "$report" "$@" <<'PY' 2>/dev/null
import json, sys
r = json.load(open(sys.argv[1])); what = sys.argv[2]; a = sys.argv[3:]
rounds = r.get("rounds", [])
if what == "rounds":            # completed rounds
    print(len(rounds))
elif what == "finished":
    print(int(bool(r.get("finished"))))
elif what == "resumed":
    print(r.get("resumed_from_round") or "")
elif what == "back":            # site, kill_ms: rejoined after the kill (any event) -> 1
    site, ms = int(a[0]), int(a[1])
    print(int(any(e.get("site") == site and e["kind"] == "site-rejoined" and e["at_unix_ms"] > ms for e in r["events"])))
PY
}
rounds_ge() { [ "$(q rounds || echo 0)" -ge "$1" ] || [ "$(q finished || echo 0)" = 1 ]; }
waitfor 120 "2 completed rounds" rounds_ge 2
log "$(q rounds) rounds completed before any chaos"

# A site is back when it rejoined after its kill and a round completed after the rejoin with it among the
# contributors (the round watcher's sightings give the completion times).
contributed_after() { # SITE MS
  python3 - "$report" "$out/rounds.jsonl" "$1" "$2" <<'PY' 2>/dev/null
import json, sys
r = json.load(open(sys.argv[1])); site, ms = int(sys.argv[3]), int(sys.argv[4])
rej = [e["at_unix_ms"] for e in r["events"] if e.get("site") == site and e["kind"] == "site-rejoined" and e["at_unix_ms"] > ms]
seen = {}
for l in open(sys.argv[2]):
    j = json.loads(l); seen.setdefault(j["round"], j["seen_unix_ms"])
ok = rej and any(seen.get(x["round"], 0) > rej[0] and site in [c["site_id"] for c in x["contributors"]] for x in r["rounds"])
sys.exit(0 if ok else 1)
PY
}

# --- 5. chaos on the sites, from this host (the pods cannot reach the API server here)
if [ "$kills" -gt 0 ]; then
  max_ticks=$(( kills * 3 ))
  timeout "$(left)" "$bin" --log-format json chaos kill-pods --namespace histofed \
    --selector app=histofed-site --every "$kill_every" --count "$kills" --grace 0 --seed 7 --max-ticks "$max_ticks" \
    > "$out/chaos-sites.json" 2> "$out/logs/chaos-sites.log"
  log "chaos: $(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(", ".join(k["pod"] + " killed at " + str(k["unix_ms"]) for k in s["kills"]))' "$out/chaos-sites.json")"
  while read -r pod ms; do
    waitfor 120 "$pod to rejoin and contribute again" contributed_after "${pod##*-}" "$ms"
    log "$pod is back and contributed to a later round"
  done < <(python3 -c 'import json,sys; [print(k["pod"], k["unix_ms"]) for k in json.load(open(sys.argv[1]))["kills"]]' "$out/chaos-sites.json")
fi

# --- 6. kill the server pod once; it must resume from its checkpoint
if [ "$kill_server" = 1 ]; then
  n=$(q rounds)
  [ $(( rounds - n )) -ge 3 ] || { log "only $((rounds - n)) rounds left before the server kill: raise E2E_ROUNDS or E2E_LOCAL_STEPS"; exit 1; }
  old=$(server_pod)
  kubectl -n histofed logs -f "$old" > "$out/logs/$old.log" 2>&1 &
  bg_pids+=($!)
  timeout 60 "$bin" --log-format json chaos kill-pods --namespace histofed --selector app=histofed-server \
    --every 1s --count 1 --grace 0 --max-ticks 5 > "$out/chaos-server.json" 2> "$out/logs/chaos-server.log"
  log "chaos: server pod $old killed after round $n"
  new_ready() { local p; p=$(server_pod); [ -n "$p" ] && [ "$p" != "$old" ] && ready "$p"; }
  waitfor 120 "a new Ready server pod" new_ready
  new=$(server_pod)
  echo "$(now_ms) $new" > "$out/server-ready.txt"
  log "new server $new Ready"
  kubectl -n histofed logs -f "$new" > "$out/logs/$new.follow.log" 2>&1 &
  bg_pids+=($!)
  resumed() { [ -n "$(q resumed)" ] && [ "$(q rounds || echo 0)" -gt "$n" ]; }
  waitfor 120 "a round completed by the resumed server" resumed
  log "server resumed from round $(q resumed) and completed round $(q rounds)"
fi

# --- 6b. node loss: node 2 killed, then frozen and resumed (checks and timeline in e2e_k8s_nodeloss.sh)
if [ "$scenario" = nodeloss ]; then
  . "$root/scripts/e2e_k8s_nodeloss.sh"
fi

# --- 7. the run must finish every round (nodeloss: it is stopped after two more rounds, and the rounds completed
# so far are checked the same way); then check the report against the kills
finished() { [ "$(q finished || echo 0)" = 1 ]; }
if [ "$scenario" = nodeloss ]; then
  target=$(( $(q rounds) + 2 ))
  waitfor 120 "2 more rounds" rounds_ge "$target"
  sleep 0.5
  log "stopping the run after $(q rounds) rounds"
else
  waitfor 300 "the run to finish ($rounds rounds)" finished
  sleep 0.5   # the round watcher's last sighting
  log "run finished: $(q rounds) rounds"
fi
cp "$report" "$out/report.json"
for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null || true; done
bg_pids=()
python3 - "$out" "$rounds" "$kill_server" "$scenario" <<'PY'
import datetime, glob, json, os, sys
out, rounds, kill_server = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
if sys.argv[4] == "nodeloss":   # stopped on purpose: the rounds completed so far, each exactly once
    rounds = len(json.load(open(f"{out}/report.json"))["rounds"])
report = json.load(open(f"{out}/report.json"))
sightings = [json.loads(l) for l in open(f"{out}/rounds.jsonl")]
done_at = {}
for s in sightings:
    done_at.setdefault(s["round"], s["seen_unix_ms"])
events = report["events"]
fail = []
def sec(a, b): return f"{(b - a) / 1000:+.2f} s"
def round_with(site, after_ms):
    """The first round completed after `after_ms` with `site` among its contributors."""
    c = [x["round"] for x in report["rounds"] if site in [y["site_id"] for y in x["contributors"]] and done_at.get(x["round"], 0) > after_ms]
    return min(c, key=lambda r: done_at[r]) if c else None
def first(kind, site, after_ms):
    e = [x["at_unix_ms"] for x in events if x["kind"] == kind and (site is None or x.get("site") == site) and x["at_unix_ms"] > after_ms]
    return min(e) if e else None

# Each round exactly once: 1..N in the report, none twice, none completed twice with other contents.
done = [r["round"] for r in report["rounds"]]
if not report.get("finished") and sys.argv[4] != "nodeloss":
    fail.append("report not finished")
if done != list(range(1, rounds + 1)):
    fail.append(f"rounds in report {done}, expected 1..{rounds} once each")
again = sorted({s["round"] for s in sightings if s["again"]})
if again:
    fail.append(f"rounds completed twice (other contents the second time): {again}")
twice = [(x["round"], ids) for x in report["rounds"] for ids in [[c["site_id"] for c in x["contributors"]]] if len(set(ids)) != len(ids)]
if twice:
    fail.append(f"a site counted twice in one round (round, contributors): {twice}")
print(f"rounds: {len(done)} of {rounds}, each once: {done == list(range(1, rounds + 1)) and not again}; "
      f"no site twice in a round: {not twice}")
for r in report["rounds"]:
    resent = [c["site_id"] for c in r["contributors"] if c.get("from_local_checkpoint")]
    midway = [(c["site_id"], c["resumed_from_step"]) for c in r["contributors"] if c.get("resumed_from_step")]
    print(f"  round {r['round']:2}: attempts {r['attempts']} contributors {[c['site_id'] for c in r['contributors']]}"
          f" dropped {r['dropped']} wall {r['wall_secs']:.2f} s"
          + (f" re-sent from site checkpoints {resent}" if resent else "")
          + (f" resumed mid-round (site, step) {midway}" if midway else ""))

# Site kills: killed -> lost (server notices) -> rejoined -> next round completed with it.
kills = json.load(open(f"{out}/chaos-sites.json"))["kills"] if os.path.exists(f"{out}/chaos-sites.json") else []
for k in kills:
    site, t = int(k["pod"].rsplit("-", 1)[1]), k["unix_ms"]
    lost = min([x["at_unix_ms"] for x in events if x.get("site") == site and x["kind"] in
                ("site-disconnected", "site-unresponsive", "site-pod-gone") and x["at_unix_ms"] >= t - 50] or [0]) or None
    rej = first("site-rejoined", site, t)
    r = round_with(site, rej) if rej else None
    print(f"site kill {k['pod']}: killed at {t}; server lost it {sec(t, lost) if lost else 'n/a'}; rejoined "
          f"{sec(t, rej) if rej else 'NEVER'}; next round with it: "
          + (f"round {r} completed {sec(t, done_at[r])} (rejoin -> round {sec(rej, done_at[r])})" if r else "NONE"))
    if not rej:
        fail.append(f"site {site} never rejoined after its kill")
    elif not r:
        fail.append(f"site {site} never contributed to a round after its rejoin")

# Server kill: killed -> new pod Ready -> resumed (log) -> sites rejoined -> next round completed.
if kill_server:
    ks = json.load(open(f"{out}/chaos-server.json"))["kills"]
    t = ks[0]["unix_ms"] if ks else None
    if not t:
        fail.append("the server pod was not killed")
    else:
        ready_ms, pod = open(f"{out}/server-ready.txt").read().split()
        ready_ms = int(ready_ms)
        res_ms = None
        for path in glob.glob(f"{out}/logs/{pod}*.log"):
            for l in open(path, errors="replace"):
                if "resuming from checkpoint" in l:
                    try:
                        j = json.loads(l)
                        res_ms = int(datetime.datetime.fromisoformat(j["timestamp"].replace("Z", "+00:00")).timestamp() * 1000)
                    except Exception:
                        pass
        resumed = report.get("resumed_from_round")
        rej = sorted(x["at_unix_ms"] for x in events if x["kind"] == "site-rejoined" and x["at_unix_ms"] > t)
        # A round the dying server finished in the moment after the kill (its checkpoint was already durable) is
        # not the new server's: judge the first round completed after the new server said it resumed.
        since = res_ms if res_ms else t
        after = sorted((ms, r) for r, ms in done_at.items() if ms > since)
        nxt = after[0] if after else None
        print(f"server kill {ks[0]['pod']}: killed at {t}; new pod {pod} Ready {sec(t, ready_ms)}; "
              f"'resuming from checkpoint' {sec(t, res_ms) if res_ms else 'n/a'} (from round {resumed}); "
              f"sites rejoined {', '.join(sec(t, x) for x in rej) or 'none'}; "
              + (f"next round {nxt[1]} completed {sec(t, nxt[0])}" if nxt else "no round completed after it"))
        if not resumed:
            fail.append("the server was killed but the report has no resumed_from_round")
        if not nxt:
            fail.append("no round completed after the server kill")
        elif resumed is not None and nxt[1] != resumed + 1:
            fail.append(f"after resuming from round {resumed} the next completed round was {nxt[1]}")
timing = {"rounds": done_at, "kills": kills}
json.dump(timing, open(f"{out}/timings.json", "w"), indent=1)
if fail:
    sys.exit("e2e report check FAILED: " + "; ".join(fail))
print("e2e report check ok")
PY
