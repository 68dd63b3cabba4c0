#!/usr/bin/env bash
# End-to-end test of the operator on a real Kubernetes cluster (kind by
# default): build and load the image, install the chart, create a cluster,
# write and read through tikv-client (`shale raw` in a pod), scale storage
# 3 -> 4 -> 3 and upgrade to a new version, checking data after each step.
#
#   e2e/k8s/run.sh                  # creates a kind cluster "shale-e2e"
#   E2E_CLUSTER=k3d e2e/k8s/run.sh  # uses k3d instead
#   E2E_CLUSTER=existing e2e/k8s/run.sh   # the current kubectl context
#   sudo E2E_CLUSTER=local e2e/k8s/run.sh # e2e/k8s/cluster.sh's one-node cluster
#   KEEP=1 e2e/k8s/run.sh           # leave everything running afterwards
#
# Needs docker, kubectl, helm and kind (or k3d); the local cluster needs
# none of them (it builds kubectl and helm from their Go modules, and the
# image from the workspace's binaries). See e2e/k8s/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER_KIND="${E2E_CLUSTER:-kind}"
NAME="${E2E_NAME:-shale-e2e}"
NS="${E2E_NAMESPACE:-shale-e2e}"
OPERATOR_NS="shale-system"
IMAGE="shale"
TAG_A="e2e-a"
TAG_B="e2e-b"
TIMEOUT="${E2E_TIMEOUT:-600s}"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf '\033[31mFAIL: %s\033[0m\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required"; }

if [ "$CLUSTER_KIND" = local ]; then
  [ "$(id -u)" = 0 ] || die "E2E_CLUSTER=local needs root (it runs a kubelet)"
  # kubectl and helm come with the local cluster's components.
  e2e/k8s/cluster.sh build
  eval "$(e2e/k8s/cluster.sh env)"
fi
for tool in kubectl helm; do need "$tool"; done

created_cluster=0
cleanup() {
  status=$?
  if [ "$status" -ne 0 ]; then
    say "Diagnostics"
    kubectl -n "$NS" get tikvclusters,statefulsets,pods -o wide || true
    kubectl -n "$NS" describe tikvcluster basic || true
    kubectl -n "$OPERATOR_NS" logs deploy/shale-operator --tail=100 || true
  fi
  if [ "${KEEP:-0}" = "1" ]; then
    say "KEEP=1: leaving the cluster running"
  else
    kubectl -n "$NS" delete tikvcluster basic --ignore-not-found --wait=true --timeout=120s || true
    helm -n "$OPERATOR_NS" uninstall shale-operator || true
    if [ "$created_cluster" = "1" ]; then
      case "$CLUSTER_KIND" in
        kind) kind delete cluster --name "$NAME" || true ;;
        k3d) k3d cluster delete "$NAME" || true ;;
        local) e2e/k8s/cluster.sh down || true ;;
      esac
    fi
  fi
  exit "$status"
}
trap cleanup EXIT

say "Preparing a $CLUSTER_KIND cluster"
case "$CLUSTER_KIND" in
  kind)
    need kind
    if ! kind get clusters | grep -x "$NAME" >/dev/null; then
      kind create cluster --name "$NAME" --wait 120s
      created_cluster=1
    fi
    kubectl config use-context "kind-$NAME"
    ;;
  k3d)
    need k3d
    if ! k3d cluster list "$NAME" >/dev/null 2>&1; then
      k3d cluster create "$NAME" --wait
      created_cluster=1
    fi
    kubectl config use-context "k3d-$NAME"
    ;;
  local)
    if ! kubectl get --raw /readyz >/dev/null 2>&1; then
      e2e/k8s/cluster.sh up
      created_cluster=1
    fi
    ;;
  existing) ;;
  *) die "E2E_CLUSTER must be kind, k3d, local or existing" ;;
esac

if [ "$CLUSTER_KIND" = local ]; then
  say "Building $IMAGE:$TAG_A from the workspace's binaries (and tagging it $TAG_B for the upgrade)"
  . scripts/setup.sh
  cargo build --workspace --bins
  target="${CARGO_TARGET_DIR:-target}/debug"
  image_dir="$(mktemp -d)"
  tar="$image_dir/shale.tar"
  python3 e2e/k8s/image.py --name "docker.io/library/$IMAGE:$TAG_A" --out "$tar" -- \
    "$target/placement" "$target/storage-node" "$target/operator" "$target/shale"
  ctr="ctr --address $(e2e/k8s/cluster.sh containerd-socket) -n k8s.io"
  $ctr images import "$tar" >/dev/null
  $ctr images tag --force "docker.io/library/$IMAGE:$TAG_A" "docker.io/library/$IMAGE:$TAG_B" >/dev/null
  rm -rf "$image_dir"
else
  need docker
  say "Building $IMAGE:$TAG_A (and tagging it $TAG_B for the upgrade)"
  docker build -t "$IMAGE:$TAG_A" .
  docker tag "$IMAGE:$TAG_A" "$IMAGE:$TAG_B"
fi
case "$CLUSTER_KIND" in
  kind) kind load docker-image "$IMAGE:$TAG_A" "$IMAGE:$TAG_B" --name "$NAME" ;;
  k3d) k3d image import "$IMAGE:$TAG_A" "$IMAGE:$TAG_B" --cluster "$NAME" ;;
  existing) say "Existing cluster: make sure it can pull $IMAGE:$TAG_A and $IMAGE:$TAG_B" ;;
  local) ;;
esac

say "Installing the operator chart"
helm upgrade --install shale-operator charts/shale-operator \
  --namespace "$OPERATOR_NS" --create-namespace \
  --set image.repository="$IMAGE" --set image.tag="$TAG_A" \
  --set evictLeaderTimeoutSeconds=60 \
  --wait --timeout "$TIMEOUT"
kubectl -n "$OPERATOR_NS" get lease shale-operator -o jsonpath='{.spec.holderIdentity}' \
  | grep . >/dev/null || die "no operator replica holds the leader lease"

say "Creating TiKVCluster basic (version $TAG_A) in namespace $NS"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
sed -e "s/version: \"0.1.0\"/version: \"$TAG_A\"/" examples/basic.yaml \
  | kubectl -n "$NS" apply -f -

wait_ready() {
  kubectl -n "$NS" wait tikvcluster/basic --for=condition=Ready --timeout="$TIMEOUT"
}
wait_field() { # jsonpath expected
  kubectl -n "$NS" wait tikvcluster/basic --for=jsonpath="$1"="$2" --timeout="$TIMEOUT"
}
shale_cmd() { # runs `shale ...` in a one-off pod inside the cluster; prints its output
  # Not `run -i`: attaching to a command that ends at once races with its
  # end (kubectl then falls back to the log and may print it twice).
  local pod="shale-client-$RANDOM" phase="" i
  kubectl -n "$NS" run "$pod" --restart=Never --quiet \
    --image="$IMAGE:$TAG_A" --image-pull-policy=Never \
    --command -- shale "$@" --pd "basic-placement.$NS.svc:2379" >/dev/null
  for i in $(seq 1 120); do
    phase="$(kubectl -n "$NS" get pod "$pod" -o jsonpath='{.status.phase}')"
    case "$phase" in Succeeded | Failed) break ;; esac
    sleep 1
  done
  kubectl -n "$NS" logs "$pod"
  kubectl -n "$NS" delete pod "$pod" --wait=false >/dev/null
  [ "$phase" = Succeeded ]
}
expect_value() { # key value
  local got
  got="$(shale_cmd raw get "$1" | tr -d '\r')"
  [ "$got" = "$2" ] || die "raw get $1: expected '$2', got '$got'"
}

wait_ready
wait_field '{.status.phase}' Running
kubectl -n "$NS" get tikvcluster basic

say "Writing and reading through tikv-client"
put_out="$(shale_cmd raw put e2e-key hello 2>&1 | tr -d '\r')" || true
[ "$put_out" = "OK" ] || die "raw put failed: $put_out"
expect_value e2e-key hello
for i in $(seq 1 20); do shale_cmd raw put "k$i" "v$i" >/dev/null; done

say "Scaling storage 3 -> 4"
kubectl -n "$NS" patch tikvcluster basic --type merge -p '{"spec":{"storage":{"replicas":4}}}'
wait_field '{.status.storage.readyReplicas}' 4
wait_ready
[ "$(kubectl -n "$NS" get tikvcluster basic -o jsonpath='{.status.stores[3].state}')" = "Up" ] \
  || die "the fourth store is not Up"
expect_value e2e-key hello

say "Scaling storage 4 -> 3 (store deleted, Tombstone, then the pod goes)"
kubectl -n "$NS" patch tikvcluster basic --type merge -p '{"spec":{"storage":{"replicas":3}}}'
wait_field '{.status.storage.replicas}' 3
wait_ready
kubectl -n "$NS" get events --field-selector involvedObject.name=basic -o custom-columns=REASON:.reason \
  | grep RemovingStore >/dev/null || die "no RemovingStore event"
shale_cmd stores | grep Tombstone >/dev/null || die "the removed store is not Tombstone"
expect_value e2e-key hello
expect_value k20 v20

say "Upgrading $TAG_A -> $TAG_B pod by pod"
kubectl -n "$NS" patch tikvcluster basic --type merge -p "{\"spec\":{\"version\":\"$TAG_B\"}}"
wait_field '{.status.version}' "$TAG_B"
wait_ready
images="$(kubectl -n "$NS" get pods -l app.kubernetes.io/instance=basic \
  -o jsonpath='{range .items[*]}{.spec.containers[0].image}{"\n"}{end}' | sort -u)"
[ "$images" = "$IMAGE:$TAG_B" ] || die "pods still run other images: $images"
kubectl -n "$NS" get events --field-selector involvedObject.name=basic -o custom-columns=REASON:.reason \
  | grep EvictingLeaders >/dev/null || die "no EvictingLeaders event"
expect_value e2e-key hello
expect_value k1 v1

say "End-to-end on Kubernetes: passed"
