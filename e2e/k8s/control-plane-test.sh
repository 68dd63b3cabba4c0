#!/usr/bin/env bash
# The operator, its CRD and its chart's RBAC against a real Kubernetes
# control plane (e2e/k8s/cluster.sh): the CRD's CEL rules reject bad edits
# with their messages, two operators running as the chart's ServiceAccount
# (a real token, the chart's Roles) elect one leader through a Lease and
# hand over when it dies, a TiKVCluster becomes a placement StatefulSet whose
# Pods and claims the real StatefulSet controller creates, and deleting the
# TiKVCluster lets the garbage collector remove what it owned.
#
# No node runs pods here, so nothing is scheduled: what is checked is what
# the API server and the controllers do. Needs root, Go and the chart tools
# (scripts/check-chart.sh installs them).
#
#   e2e/k8s/control-plane-test.sh        # KEEP=1 leaves the cluster up
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
fail() {
  printf '\033[31mFAIL: %s\033[0m\n' "$*" >&2
  exit 1
}

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shale-target}"
venv="${SHALE_CHART_VENV:-$HOME/.cache/shale-chart-venv}"
[ -x "$venv/bin/python" ] || scripts/check-chart.sh >/dev/null
[ -x "$CARGO_TARGET_DIR/debug/operator" ] || cargo build --workspace --bins

# The control plane alone: nothing here needs pods to run.
SHALE_K8S_NODE=0 e2e/k8s/cluster.sh up
eval "$(e2e/k8s/cluster.sh env)"
WORK=$(mktemp -d)
operators=()
cleanup() {
  status=$?
  for pid in "${operators[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ "$status" -ne 0 ]; then
    say "Diagnostics"
    kubectl get tikvclusters,statefulsets,pods,pvc,leases -A || true
    for log in "$WORK"/operator-*.log; do
      [ -f "$log" ] && { echo "--- $log"; tail -40 "$log"; }
    done
  fi
  if [ "${KEEP:-0}" != 1 ]; then
    e2e/k8s/cluster.sh down >/dev/null
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT

# until SECONDS WHAT CMD...: retries CMD until it succeeds.
until_ok() {
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "$what (after ${seconds}s)"
    sleep 1
  done
}

# refused WHAT EXPECTED CMD...: CMD must fail with EXPECTED in its message.
refused() {
  local what=$1 expected=$2
  shift 2
  local out
  if out=$("$@" 2>&1); then
    fail "$what was accepted"
  fi
  grep -qF "$expected" <<<"$out" || fail "$what: refused, but not with \"$expected\": $out"
  echo "  refused as expected: $what"
}

say "Installing the CRD (server-side apply) and the chart's RBAC"
kubectl apply --server-side -f charts/shale-operator/crds/ >/dev/null
kubectl wait --for condition=established --timeout=60s crd/tikvclusters.shale.dev >/dev/null
kubectl create namespace shale-system >/dev/null
"$venv/bin/python" e2e/k8s/render_chart.py shale-system >"$WORK/chart.yaml"
# Everything but the operator's Deployment: no node runs pods here, so the
# operators run as processes with the chart's ServiceAccount instead.
"$venv/bin/python" - "$WORK/chart.yaml" >"$WORK/rbac.yaml" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] != "Deployment"]
print(yaml.safe_dump_all(docs))
EOF
kubectl apply -f "$WORK/rbac.yaml" >/dev/null
account=$(kubectl -n shale-system get serviceaccount -o jsonpath='{.items[?(@.metadata.name!="default")].metadata.name}')
[ -n "$account" ] || fail "the chart created no ServiceAccount"
token=$(kubectl -n shale-system create token "$account" --duration 2h)
cat >"$WORK/operator.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: shale
  cluster:
    certificate-authority: $(kubectl config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority}')
    server: $(kubectl config view --raw -o jsonpath='{.clusters[0].cluster.server}')
users:
- name: operator
  user:
    token: $token
contexts:
- name: shale
  context: {cluster: shale, user: operator, namespace: shale-system}
current-context: shale
EOF
# The chart's permissions are what the operator gets: check a few.
as_operator() { kubectl --kubeconfig "$WORK/operator.kubeconfig" "$@"; }
as_operator auth can-i create statefulsets -n shale-db | grep -x yes >/dev/null ||
  fail "the chart's ServiceAccount cannot create StatefulSets"
if as_operator auth can-i create secrets -n kube-system | grep -x yes >/dev/null; then
  fail "the chart's ServiceAccount may create Secrets in kube-system"
fi

declare -A pid_of
start_operator() {
  local name=$1 port=$2
  KUBECONFIG="$WORK/operator.kubeconfig" POD_NAMESPACE=shale-system POD_NAME="$name" \
    SHALE_HTTP_ADDR="127.0.0.1:$port" RUST_LOG=info \
    "$CARGO_TARGET_DIR/debug/operator" >"$WORK/operator-$name.log" 2>&1 &
  operators+=($!)
  pid_of[$name]=$!
}
lease_holder() {
  kubectl -n shale-system get lease shale-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null
}

say "Two operators as the chart's ServiceAccount: one leader through the Lease"
start_operator operator-a 18080
start_operator operator-b 18081
# A function, so the holder is read again on every try.
lease_held() { test -n "$(lease_holder)"; }
until_ok 60 "no operator took the Lease" lease_held
leader=$(lease_holder)
echo "  Lease held by $leader"

say "A TiKVCluster becomes a placement StatefulSet; the StatefulSet controller makes its Pods and claims"
kubectl create namespace shale-db >/dev/null
kubectl -n shale-db apply -f examples/basic.yaml >/dev/null
until_ok 90 "no placement StatefulSet" kubectl -n shale-db get statefulset basic-placement
replicas=$(kubectl -n shale-db get statefulset basic-placement -o jsonpath='{.spec.replicas}')
[ "$replicas" = 3 ] || fail "placement StatefulSet has $replicas replicas, want 3"
owner=$(kubectl -n shale-db get statefulset basic-placement -o jsonpath='{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}')
[ "$owner" = TiKVCluster/basic ] || fail "placement StatefulSet is owned by '$owner'"
until_ok 60 "the StatefulSet controller created no pod basic-placement-0" \
  kubectl -n shale-db get pod basic-placement-0
until_ok 60 "no claim for basic-placement-0" \
  sh -c "kubectl -n shale-db get pvc -o name | grep placement-0 >/dev/null"
has_status() { test -n "$(kubectl -n shale-db get tikvcluster basic -o jsonpath='{.status.phase}')"; }
until_ok 60 "the operator wrote no status" has_status
echo "  phase: $(kubectl -n shale-db get tikvcluster basic -o jsonpath='{.status.phase}')"

say "The CRD's validation rules refuse bad edits with their messages"
refused "storage.replicas below maxReplicas" "storage.replicas must be at least maxReplicas" \
  kubectl -n shale-db patch tikvcluster basic --type merge -p '{"spec":{"storage":{"replicas":2}}}'
refused "a new storage volume size" "cannot change after creation" \
  kubectl -n shale-db patch tikvcluster basic --type merge -p '{"spec":{"storage":{"storage":{"size":"20Gi"}}}}'
refused "a negative replica count" "spec.placement.replicas" \
  kubectl -n shale-db patch tikvcluster basic --type merge -p '{"spec":{"placement":{"replicas":-1}}}'

say "The leader dies: the other operator takes the Lease"
[ -n "${pid_of[$leader]:-}" ] || fail "the Lease holder '$leader' is neither operator"
kill -9 "${pid_of[$leader]}"
moved() { local now; now=$(lease_holder); [ -n "$now" ] && [ "$now" != "$leader" ]; }
until_ok 90 "the Lease did not move from $leader" moved
echo "  Lease now held by $(lease_holder)"

say "Deleting the TiKVCluster: the finalizer runs, the garbage collector removes what it owned"
kubectl -n shale-db delete tikvcluster basic --wait=false >/dev/null
until_ok 90 "the TiKVCluster was not deleted" \
  sh -c "! kubectl -n shale-db get tikvcluster basic"
until_ok 90 "the placement StatefulSet outlived its TiKVCluster" \
  sh -c "! kubectl -n shale-db get statefulset basic-placement"

say "Control-plane test passed"
