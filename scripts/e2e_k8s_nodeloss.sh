# Node loss in two real nodes, sourced by scripts/e2e_k8s.sh when E2E_SCENARIO=nodeloss (`make e2e-k8s-nodeloss`),
# once the server (pinned to node 1) and the 3 sites (spread over both nodes) run and 2 rounds completed. The server
# runs the cpu-node-loss overlay: its pod and node watch run in its pod, with its ServiceAccount, and it force-deletes
# the pod of a lost site whose node has been down for k8s.node_lost_secs (10 s here).
#   A. node 2 dies (node2-kill.sh: SIGKILL to its kubelet, containerd and every container): for each site on it,
#      node death -> site lost -> node NotReady -> pod force-deleted -> replacement Ready on node 1 -> site rejoined
#      (with no local state: its checkpoints were on the dead node) -> first round with it;
#   B. node 2 comes back (node2-up.sh, a reboot);
#   C. one site is moved back to node 2, which is then frozen (node2-kill.sh --stop) until its pod is replaced on
#      node 1 and the replacement took the site over; then node 2 is resumed (SIGCONT): its old site process wakes up
#      as a zombie and must be refused (its log, or the server's events) and count nothing.
# With E2E_REMEDIATE=0 (the same RBAC and node watch, remediation off): A. node 2 killed and watched for E2E_OBSERVE
# (60) s — the federation goes on without its sites, their pods stay (Ready=False, then Terminating) and nothing
# replaces them; B. node 2 back: its kubelet finalizes the pods, their successors start and rejoin. No C.
# Uses e2e_k8s.sh's helpers (log, q, waitfor, ready, now_ms, contributed_after, node2_start) and variables.
# Writes $out/nodeloss.json (the timelines) and prints them.

ns=histofed
node_of() { kubectl -n $ns get pod "$1" -o jsonpath='{.spec.nodeName}' 2>/dev/null; }
uid_of() { kubectl -n $ns get pod "$1" -o jsonpath='{.metadata.uid}' 2>/dev/null; }
node_ready() { [ "$(kubectl get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; }
# ev KIND SITE|- AFTER_MS: unix ms of the first report event KIND (of SITE, or any) after AFTER_MS; empty if none
ev() { python3 - "$report" "$@" <<'PY' 2>/dev/null
import json, sys
r = json.load(open(sys.argv[1])); kind, site, after = sys.argv[2], sys.argv[3], int(sys.argv[4])
t = [e["at_unix_ms"] for e in r["events"] if e["kind"] == kind and (site == "-" or e.get("site") == int(site))
     and e["at_unix_ms"] > after]
print(min(t) if t else "")
PY
}
has_ev() { [ -n "$(ev "$@")" ]; }
# A new pod under that name (another uid), Ready, on node 1 / anywhere.
replaced_on_node1() { local u; u=$(uid_of "$1"); [ -n "$u" ] && [ "$u" != "$2" ] && ready "$1" && [ "$(node_of "$1")" = "$NODE" ]; }
replaced() { local u; u=$(uid_of "$1"); [ -n "$u" ] && [ "$u" != "$2" ] && ready "$1"; }
# wait_back SINCE_MS CHECK: until every victim has a new pod for which `CHECK POD OLD_UID` holds (its time in
# ready_ms) and has contributed to a round after SINCE_MS; bounded by 180 s and the e2e deadline.
wait_back() {
  local since=$1 check=$2 all i until_ms   # (not t0: log() reads e2e_k8s.sh's t0)
  until_ms=$(( $(now_ms) + 180000 ))
  while :; do
    all=1
    for i in "${victims[@]}"; do
      if [ -z "${ready_ms[$i]:-}" ] && $check "histofed-site-$i" "${old_uid[$i]}"; then
        ready_ms[$i]=$(now_ms); log "histofed-site-$i: new pod Ready on $(node_of "histofed-site-$i")"
      fi
      { [ -n "${ready_ms[$i]:-}" ] && contributed_after "$i" "$since"; } || all=0
    done
    [ $all = 1 ] && return 0
    if [ "$(now_ms)" -gt "$until_ms" ] || [ "$(left)" -le 0 ]; then
      log "nodeloss: the sites were not back within 180 s"; kubectl -n $ns get pods -o wide; return 1
    fi
    sleep 0.5
  done
}

# ---- A. node 2 dies
victims=()
for i in 0 1 2; do [ "$(node_of histofed-site-$i)" = "$NODE2" ] && victims+=("$i"); done
if [ ${#victims[@]} = 0 ]; then
  log "nodeloss: no site pod was scheduled on $NODE2:"; kubectl -n $ns get pods -o wide; exit 1
fi
declare -A old_uid ready_ms
for i in "${victims[@]}"; do old_uid[$i]=$(uid_of histofed-site-$i); done
log "node loss: site(s) ${victims[*]} on $NODE2, the server and the others on $NODE; killing $NODE2 (SIGKILL)"
kill_ms=$(now_ms)
bash "$K/node2-kill.sh" > "$out/logs/node2-kill.log" 2>&1
if [ "$remediate" = 0 ]; then
  obs=${E2E_OBSERVE:-60}
  declare -A evicted_ms
  while [ "$(now_ms)" -lt $(( kill_ms + obs * 1000 )) ]; do
    for i in "${victims[@]}"; do
      if [ -z "${evicted_ms[$i]:-}" ] && [ -n "$(kubectl -n $ns get pod histofed-site-$i -o jsonpath='{.metadata.deletionTimestamp}' 2>/dev/null)" ]; then
        evicted_ms[$i]=$(now_ms); log "histofed-site-$i evicted (Terminating) on the dead node"
      fi
    done
    sleep 0.5
  done
  for i in "${victims[@]}"; do
    [ "$(uid_of histofed-site-$i)" = "${old_uid[$i]}" ] || { log "nodeloss: histofed-site-$i was replaced without remediation"; exit 1; }
  done
  log "after ${obs} s without remediation: the dead node's site pods are still its own ($(kubectl -n $ns get pods -o wide --no-headers | awk '{print $1 "=" $3 "@" $7}' | tr '\n' ' '))"
  evicted_a=$(for i in "${victims[@]}"; do printf '%s:%s,' "$i" "${evicted_ms[$i]:-0}"; done)
  back_ms=$(now_ms)
  node2_start
  waitfor 60 "$NODE2 Ready again" node_ready "$NODE2"
  node_back_ms=$(now_ms)
  wait_back "$back_ms" replaced || exit 1
  ready_a=$(for i in "${victims[@]}"; do printf '%s:%s,' "$i" "${ready_ms[$i]}"; done)
  python3 - "$report" "$out/rounds.jsonl" "$out" "$NODE2" "$kill_ms" "$evicted_a" "$back_ms" "$node_back_ms" "$ready_a" <<'PY'
import json, sys
report, rounds_jsonl, out, node2, kill_ms, evicted_a, back_ms, node_back_ms, ready_a = sys.argv[1:]
r = json.load(open(report)); events = r["events"]
kill_ms, back_ms, node_back_ms = int(kill_ms), int(back_ms), int(node_back_ms)
pairs = lambda x: {int(a): int(b) for a, b in (y.split(":") for y in x.strip(",").split(","))}
evicted, ready = pairs(evicted_a), pairs(ready_a)
done_at = {}
for l in open(rounds_jsonl):
    j = json.loads(l); done_at.setdefault(j["round"], j["seen_unix_ms"])
def first(kind, site, after, text=None):
    t = [e for e in events if e["kind"] == kind and (site is None or e.get("site") == site) and e["at_unix_ms"] > after
         and (text is None or text in e["detail"])]
    return min(t, key=lambda e: e["at_unix_ms"]) if t else None
def s(ms, t0): return None if not ms else round((ms - t0) / 1000, 2)
def at(e): return e["at_unix_ms"] if e else None
fail = []
notready = first("node-not-ready", None, kill_ms, text=node2)
nr = first("node-ready", None, back_ms, text=node2)
print(f"A. {node2} killed (SIGKILL), no remediation; seconds after the kill: NotReady {s(at(notready), kill_ms)};"
      f" node back (node2-up.sh started) {s(back_ms, kill_ms)}, Ready (server's event) {s(at(nr), kill_ms)}")
timeline = {"node_not_ready": s(at(notready), kill_ms), "node_back_started": s(back_ms, kill_ms),
            "node_ready": s(at(nr), kill_ms), "sites": {}}
for site in sorted(ready):
    lost = [first(k, site, kill_ms - 50) for k in ("site-disconnected", "site-unresponsive", "site-pod-gone")]
    lost = min([e for e in lost if e], key=lambda e: e["at_unix_ms"], default=None)
    rej = first("site-rejoined", site, back_ms)
    rnd = [x["round"] for x in r["rounds"] if site in [c["site_id"] for c in x["contributors"]] and done_at.get(x["round"], 0) > at(rej)] if rej else []
    rnd = min(rnd, key=lambda n: done_at[n]) if rnd else None
    row = {"site_lost": s(at(lost), kill_ms), "evicted": s(evicted.get(site), kill_ms), "successor_ready": s(ready[site], kill_ms),
           "rejoined": s(at(rej), kill_ms), "first_round_with_it": rnd, "first_round_completed": s(done_at.get(rnd), kill_ms)}
    timeline["sites"][site] = row
    print(f"   site {site}: lost {row['site_lost']}; pod evicted (Terminating, stays) {row['evicted']}; successor Ready"
          f" {row['successor_ready']}; rejoined {row['rejoined']}; first round with it {rnd} at {row['first_round_completed']}")
    if first("pod-force-delete", site, kill_ms):
        fail.append(f"site {site}'s pod was force-deleted with remediation off")
away = [x["round"] for x in r["rounds"] if kill_ms < done_at.get(x["round"], 0) < min(ready.values())]
print(f"   rounds completed while the sites were away (quorum of the others): {len(away)}")
timeline["rounds_while_away"] = len(away)
json.dump({"without_remediation": timeline}, open(f"{out}/nodeloss.json", "w"), indent=1)
if not notready:
    fail.append(f"no node-not-ready event for {node2}")
if fail:
    sys.exit("nodeloss check FAILED: " + "; ".join(fail))
print("nodeloss check ok (without remediation)")
PY
  return 0
fi
wait_back "$kill_ms" replaced_on_node1 || exit 1
log "node loss: every site of $NODE2 is back on $NODE and contributed to a round"
ready_a=$(for i in "${victims[@]}"; do printf '%s:%s,' "$i" "${ready_ms[$i]}"; done)

# ---- B. node 2 comes back
back_ms=$(now_ms)
node2_start
waitfor 60 "$NODE2 Ready again" node_ready "$NODE2"
node_back_ms=$(now_ms)
waitfor 30 "the server's node-ready event" has_ev node-ready - "$back_ms"
log "$NODE2 back and Ready ($(( (node_back_ms - back_ms) / 1000 )) s)"

# ---- C. a zombie: a site on node 2, the node frozen, the site replaced, the node resumed
z=${victims[0]}
for attempt in 1 2 3 4; do
  u=$(uid_of histofed-site-$z)
  moved_ms=$(now_ms)
  kubectl -n $ns delete pod "histofed-site-$z" --grace-period=0 --force > /dev/null 2>&1
  new_ready() { local n; n=$(uid_of "histofed-site-$z"); [ -n "$n" ] && [ "$n" != "$u" ] && ready "histofed-site-$z"; }
  waitfor 60 "histofed-site-$z to be recreated" new_ready
  [ "$(node_of histofed-site-$z)" = "$NODE2" ] && break
  log "histofed-site-$z was recreated on $(node_of histofed-site-$z), not $NODE2 (attempt $attempt); again"
  [ "$attempt" = 4 ] && { log "nodeloss: the scheduler never put histofed-site-$z on $NODE2"; exit 1; }
done
waitfor 90 "site $z to contribute from $NODE2" contributed_after "$z" "$moved_ms"
z_uid=$(uid_of histofed-site-$z)
log "zombie case: site $z runs on $NODE2 (pod uid $z_uid); freezing $NODE2 (SIGSTOP)"
stop_ms=$(now_ms)
bash "$K/node2-kill.sh" --stop >> "$out/logs/node2-kill.log" 2>&1
waitfor 120 "site $z's replacement Ready on $NODE" replaced_on_node1 "histofed-site-$z" "$z_uid"
z_ready_ms=$(now_ms)
waitfor 60 "the replacement to take site $z over" has_ev site-fenced "$z" "$stop_ms"
waitfor 90 "site $z to contribute again (replacement)" contributed_after "$z" "$stop_ms"
log "site $z taken over by its replacement; resuming $NODE2 (SIGCONT): its old process wakes up"
cont_ms=$(now_ms)
# shellcheck disable=SC2046
kill -CONT $(node2_pids | sort -un) 2>/dev/null || true
# The zombie's own log is on node 2 (its private mount namespace) until its kubelet removes the deleted pod: copy it.
zlog=$out/logs/zombie-site-$z.log
for _ in $(seq 1 80); do
  nsenter --mount="$MNT2" -- sh -c "cat /var/log/pods/${ns}_histofed-site-${z}_${z_uid}/site/*.log" \
    > "$zlog.tmp" 2>/dev/null && [ -s "$zlog.tmp" ] && cp "$zlog.tmp" "$zlog"
  grep -q "another process took this site over\|is fenced and must stop" "$zlog" 2>/dev/null && break
  sleep 0.25
done
rm -f "$zlog.tmp"
# Give a refused frame or upload time to reach the report, then one more round.
sleep 3
waitfor 60 "a round after the zombie woke up" rounds_ge $(( $(q rounds) + 1 ))

python3 - "$report" "$out/rounds.jsonl" "$out" "$NODE2" "$kill_ms" "$ready_a" "$back_ms" "$node_back_ms" \
  "$z" "$stop_ms" "$z_ready_ms" "$cont_ms" "$zlog" <<'PY'
import json, os, sys
(report, rounds_jsonl, out, node2, kill_ms, ready_a, back_ms, node_back_ms, z, stop_ms, z_ready_ms, cont_ms,
 zlog) = sys.argv[1:]
r = json.load(open(report))
kill_ms, back_ms, node_back_ms, stop_ms, z_ready_ms, cont_ms = map(int, (kill_ms, back_ms, node_back_ms, stop_ms, z_ready_ms, cont_ms))
z = int(z)
ready_a = {int(a): int(b) for a, b in (x.split(":") for x in ready_a.strip(",").split(","))}
events = r["events"]
done_at = {}
for l in open(rounds_jsonl):
    j = json.loads(l); done_at.setdefault(j["round"], j["seen_unix_ms"])
fail = []
def first(kind, site, after, until=None, text=None):
    t = [e for e in events if e["kind"] == kind and (site is None or e.get("site") == site) and e["at_unix_ms"] > after
         and (until is None or e["at_unix_ms"] < until) and (text is None or text in e["detail"])]
    return min(t, key=lambda e: e["at_unix_ms"]) if t else None
def lost(site, after):
    c = [first(k, site, after) for k in ("site-disconnected", "site-unresponsive", "site-pod-gone")]
    c = [e for e in c if e]
    return min(c, key=lambda e: e["at_unix_ms"]) if c else None
def first_round_with(site, after):
    c = [x["round"] for x in r["rounds"] if site in [y["site_id"] for y in x["contributors"]] and done_at.get(x["round"], 0) > after]
    return min(c, key=lambda n: done_at[n]) if c else None
def s(ms, t0): return None if ms is None else round((ms - t0) / 1000, 2)
def at(e): return e["at_unix_ms"] if e else None

timeline = {"node_killed": {}, "zombie": {}}
notready = first("node-not-ready", None, kill_ms, text=node2)
if not notready:
    fail.append(f"no node-not-ready event for {node2} after the kill (the in-pod node watch)")
print(f"A. {node2} killed (SIGKILL) at {kill_ms}; seconds after the kill:")
print(f"   {node2} NotReady (server's node watch, in its pod): {s(at(notready), kill_ms)}")
for site, ready_ms in sorted(ready_a.items()):
    l, fd, fdd = lost(site, kill_ms - 50), first("pod-force-delete", site, kill_ms), first("pod-force-deleted", site, kill_ms)
    rej = first("site-rejoined", site, kill_ms)
    start = first("site-process-start", site, kill_ms)
    rnd = first_round_with(site, at(rej)) if rej else None
    row = {"site_lost": s(at(l), kill_ms), "node_not_ready": s(at(notready), kill_ms),
           "pod_force_delete": s(at(fd), kill_ms), "replacement_ready": s(ready_ms, kill_ms),
           "site_rejoined": s(at(rej), kill_ms), "first_round_with_it": rnd,
           "first_round_completed": s(done_at.get(rnd), kill_ms) if rnd else None,
           "replacement_state": start["detail"] if start else None}
    timeline["node_killed"][site] = row
    print(f"   site {site}: lost {row['site_lost']} ({l['kind'] if l else '-'}); pod force-deleted {row['pod_force_delete']}"
          f" ({fdd['detail'] if fdd else 'no confirmation'}); replacement Ready on node 1 {row['replacement_ready']};"
          f" rejoined {row['site_rejoined']}; first round with it: {rnd} at {row['first_round_completed']}")
    print(f"     replacement: {row['replacement_state']}")
    if not l: fail.append(f"site {site} was never lost after the kill")
    if not fd: fail.append(f"no pod-force-delete event for site {site}")
    if fd and notready and fd["at_unix_ms"] < notready["at_unix_ms"]:
        fail.append(f"site {site}'s pod was force-deleted before its node was NotReady")
    if not start or "no local state" not in start["detail"]:
        fail.append(f"site {site}'s replacement did not report starting without local state: {start}")
    if not rnd: fail.append(f"site {site} never contributed after its replacement")
rounds_during = [x["round"] for x in r["rounds"] if kill_ms < done_at.get(x["round"], 0) < min(ready_a.values())]
print(f"   rounds completed while {node2}'s sites were away (quorum of the others): {len(rounds_during)}")
timeline["node_killed"]["rounds_while_away"] = len(rounds_during)
nr = first("node-ready", None, back_ms, text=node2)
print(f"B. {node2} back (node2-up.sh + image import): the server's node-ready event {s(at(nr), back_ms)} s after it"
      f" started (kubectl saw Ready at {s(node_back_ms, back_ms)}, after the import)")
timeline["node_back"] = {"node_ready": s(node_back_ms, back_ms), "node_ready_event": s(at(nr), back_ms)}

l = lost(z, stop_ms - 50)
notready2 = first("node-not-ready", None, stop_ms, text=node2)
fd = first("pod-force-delete", z, stop_ms)
taken = first("site-fenced", z, stop_ms, until=cont_ms)
rnd = first_round_with(z, at(taken)) if taken else None
after_cont = [e for e in events if e.get("site") == z and e["at_unix_ms"] >= cont_ms
              and e["kind"] in ("site-fenced", "fenced-frame", "fenced-transfer")]
zl = open(zlog, errors="replace").read() if os.path.exists(zlog) else ""
zombie_line = next((x for x in zl.splitlines() if "another process took this site over" in x or "is fenced and must stop" in x), None)
row = {"site_lost": s(at(l), stop_ms), "node_not_ready": s(at(notready2), stop_ms),
       "pod_force_delete": s(at(fd), stop_ms), "replacement_ready": s(z_ready_ms, stop_ms),
       "taken_over": s(at(taken), stop_ms), "first_round_with_replacement": rnd,
       "first_round_completed": s(done_at.get(rnd), stop_ms) if rnd else None,
       "resumed_at": s(cont_ms, stop_ms),
       "zombie_refused_events": [(e["kind"], s(e["at_unix_ms"], cont_ms), e["detail"]) for e in after_cont],
       "zombie_log_line": zombie_line}
timeline["zombie"] = row
print(f"C. {node2} frozen (SIGSTOP) with site {z} on it; seconds after the freeze: lost {row['site_lost']};"
      f" NotReady {row['node_not_ready']}; pod force-deleted {row['pod_force_delete']}; replacement Ready"
      f" {row['replacement_ready']}; took the site over {row['taken_over']}; first round with it {rnd} at"
      f" {row['first_round_completed']}; node resumed (SIGCONT) at {row['resumed_at']}")
for kind, t, detail in row["zombie_refused_events"]:
    print(f"   after SIGCONT +{t} s: {kind}: {detail}")
print(f"   zombie's own log: {zombie_line or '(no fenced line captured)'}")
if not taken: fail.append(f"site {z}'s replacement did not take the site over (no site-fenced event)")
if not after_cont and not zombie_line:
    fail.append("no sign that the woken zombie was refused (no fenced event after SIGCONT, no fenced line in its log)")
json.dump(timeline, open(f"{out}/nodeloss.json", "w"), indent=1)
if fail:
    sys.exit("nodeloss check FAILED: " + "; ".join(fail))
print("nodeloss check ok")
PY
