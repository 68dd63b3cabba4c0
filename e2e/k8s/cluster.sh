#!/usr/bin/env bash
# A one-node Kubernetes cluster on this machine, built from the components'
# Go modules (e2e/k8s/cluster/go.mod, e2e/k8s/tools/go.mod): etcd,
# kube-apiserver (RBAC and Node authorization, admission on),
# kube-controller-manager, kube-scheduler, and a node: kubelet with
# Debian's containerd, the CNI bridge, kube-proxy, CoreDNS and static local
# volumes. kubectl and helm come with it.
#
#   e2e/k8s/cluster.sh build    # build the components (cached by version)
#   e2e/k8s/cluster.sh up       # start everything, wait until the node is Ready
#   e2e/k8s/cluster.sh env      # print `export KUBECONFIG=...` and PATH
#   e2e/k8s/cluster.sh status   # which processes run
#   e2e/k8s/cluster.sh down     # stop everything (pods too) and delete the state
#
# SHALE_K8S_NODE=0 starts the control plane alone; SHALE_K8S_VOLUMES sets
# how many local volumes there are (24). Components are cached under
# ~/.cache/shale-k8s/<version>-<hash of the module files and build
# step>/bin, so a warm `up` builds nothing. The cluster's state
# (certificates, etcd data, logs, containerd) lives in $SHALE_K8S_STATE
# (default ~/.cache/shale-k8s/state). See e2e/k8s/README.md.
set -euo pipefail
cd "$(dirname "$0")"
HERE="$PWD"

VERSION=v1.37.2
CACHE="${SHALE_K8S_CACHE:-$HOME/.cache/shale-k8s}"
STATE="${SHALE_K8S_STATE:-$CACHE/state}"
# Pods and the node live on the CNI bridge's network; the API server
# advertises the bridge's address (it refuses loopback).
NODE_IP=10.244.0.1
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1
API_PORT=6443
ETCD_PORT=2379
CNI_BIN=${SHALE_K8S_CNI_BIN:-/usr/lib/cni}

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf '\033[31mcluster.sh: %s\033[0m\n' "$*" >&2; exit 1; }


bin_dir() {
  local key
  key=$({ cat cluster/go.mod cluster/go.sum cluster/cmd/*/main.go \
    tools/go.mod tools/go.sum tools/cmd/*/main.go; sed -n '/^build()/,/^}/p' cluster.sh; } |
    sha256sum | cut -c1-12)
  echo "$CACHE/$VERSION-$key/bin"
}

build() {
  local bin
  bin=$(bin_dir)
  if [ -x "$bin/pause" ] && [ -x "$bin/kube-apiserver" ] && [ -x "$bin/helm" ]; then
    say "Kubernetes $VERSION components already built in $bin"
    return
  fi
  command -v go >/dev/null || die "Go is required to build the Kubernetes components"
  say "Building Kubernetes $VERSION components into $bin (from their Go modules; the first build takes a while)"
  mkdir -p "$bin.partial"
  # The version a release build stamps in: clients check it (Helm against
  # a chart's kubeVersion, kubectl for skew).
  local minor=${VERSION#v1.}
  minor=${minor%%.*}
  local v ldflags="-s"
  for v in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $v.gitVersion=$VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor"
    ldflags+=" -X $v.gitTreeState=clean -X $v.buildDate=1970-01-01T00:00:00Z"
  done
  (cd cluster && GOMODCACHE="$CACHE/gomod" CGO_ENABLED=0 go build -trimpath -ldflags="$ldflags" \
    -o "$bin.partial/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl ./cmd/etcd ./cmd/pause)
  (cd tools && GOMODCACHE="$CACHE/gomod" CGO_ENABLED=0 go build -trimpath -ldflags=-s \
    -o "$bin.partial/" helm.sh/helm/v4/cmd/helm ./cmd/coredns)
  rm -rf "$bin"
  mv "$bin.partial" "$bin"
}

# --- certificates ------------------------------------------------------------

# cert NAME CN ORG [SAN]: a key and a certificate signed by the cluster CA.
cert() {
  local name=$1 cn=$2 org=$3 san=${4:-}
  local pki="$STATE/pki"
  [ -f "$pki/$name.crt" ] && return
  openssl req -new -newkey rsa:2048 -nodes -keyout "$pki/$name.key" \
    -subj "/CN=$cn${org:+/O=$org}" -out "$pki/$name.csr" 2>/dev/null
  local ext="$pki/$name.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=serverAuth,clientAuth"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } >"$ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 365 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
}

kubeconfig() {
  local name=$1 user=$2
  cat >"$STATE/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: shale
  cluster:
    certificate-authority: $STATE/pki/ca.crt
    server: https://$NODE_IP:$API_PORT
users:
- name: $user
  user:
    client-certificate: $STATE/pki/$name.crt
    client-key: $STATE/pki/$name.key
contexts:
- name: shale
  context: {cluster: shale, user: $user}
current-context: shale
EOF
}

pki() {
  local pki="$STATE/pki"
  mkdir -p "$pki"
  if [ ! -f "$pki/ca.crt" ]; then
    openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$pki/ca.key" \
      -subj "/CN=shale-test-ca" -days 365 -out "$pki/ca.crt" 2>/dev/null
    openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  fi
  cert apiserver kube-apiserver "" \
    "IP:$NODE_IP,IP:$SERVICE_IP,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost"
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  cert admin shale-admin system:masters
  cert controller-manager system:kube-controller-manager ""
  cert scheduler system:kube-scheduler ""
  kubeconfig admin shale-admin
  kubeconfig controller-manager system:kube-controller-manager
  kubeconfig scheduler system:kube-scheduler
}

# --- processes -----------------------------------------------------------------

# write_config PATH: stdin to PATH, only if it differs. A second `up` must
# not touch the files of running components: kube-proxy exits when its
# configuration file changes.
write_config() {
  local tmp="$1.new"
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}

# start NAME CMD...: runs CMD in the background, logging to logs/NAME.log.
start() {
  local name=$1
  shift
  if [ -f "$STATE/run/$name.pid" ] && kill -0 "$(cat "$STATE/run/$name.pid")" 2>/dev/null; then
    return
  fi
  mkdir -p "$STATE/run" "$STATE/logs"
  setsid "$@" >>"$STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/run/$name.pid"
}

# wait_for WHAT SECONDS CMD...: retries CMD until it succeeds.
wait_for() {
  local what=$1 seconds=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      die "$what not ready after ${seconds}s (logs in $STATE/logs)"
    fi
    sleep 0.5
  done
}

network() {
  # The bridge pods will attach to, up before the API server advertises its
  # address.
  if ! ip link show cni0 >/dev/null 2>&1; then
    ip link add cni0 type bridge
  fi
  ip addr show cni0 | grep "$NODE_IP/" >/dev/null || ip addr add "$NODE_IP/24" dev cni0
  ip link set cni0 up
}

control_plane() {
  local bin=$1
  mkdir -p "$STATE/etcd"
  say "Starting etcd"
  start etcd "$bin/etcd" --name shale-test --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster shale-test=http://127.0.0.1:2380 --log-level warn
  wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

  say "Starting kube-apiserver on https://$NODE_IP:$API_PORT (RBAC and Node authorization)"
  start kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 0.0.0.0 --secure-port "$API_PORT" --advertise-address "$NODE_IP" \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction \
    --client-ca-file "$STATE/pki/ca.crt" \
    --tls-cert-file "$STATE/pki/apiserver.crt" --tls-private-key-file "$STATE/pki/apiserver.key" \
    --kubelet-client-certificate "$STATE/pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$STATE/pki/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-key-file "$STATE/pki/sa.pub" \
    --service-account-signing-key-file "$STATE/pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --allow-privileged=true
  wait_for kube-apiserver 60 "$bin/kubectl" --kubeconfig "$STATE/admin.kubeconfig" get --raw /readyz

  say "Starting kube-controller-manager and kube-scheduler"
  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false \
    --use-service-account-credentials \
    --service-account-private-key-file "$STATE/pki/sa.key" \
    --root-ca-file "$STATE/pki/ca.crt" \
    --cluster-signing-cert-file "$STATE/pki/ca.crt" \
    --cluster-signing-key-file "$STATE/pki/ca.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --controllers '*'
  start kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig "$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig "$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false
  wait_for kube-controller-manager 60 curl -skf https://127.0.0.1:10257/healthz
  wait_for kube-scheduler 60 curl -skf https://127.0.0.1:10259/healthz
  # The default ServiceAccount exists once the controllers run: pods need it.
  wait_for "the default ServiceAccount" 60 \
    "$bin/kubectl" --kubeconfig "$STATE/admin.kubeconfig" get serviceaccount default
}

# --- the node ------------------------------------------------------------------

NODE_NAME=shale-node
POD_SUBNET=10.244.0.0/24
CONTAINERD_SOCK="$STATE/containerd/containerd.sock"
PAUSE_IMAGE=shale.local/pause:test
# Static local volumes the PVCs bind to (no provisioner runs here).
VOLUMES=${SHALE_K8S_VOLUMES:-24}

node_pki() {
  cert kubelet "system:node:$NODE_NAME" system:nodes "IP:$NODE_IP,DNS:$NODE_NAME"
  cert kube-proxy system:kube-proxy ""
  kubeconfig kubelet "system:node:$NODE_NAME"
  kubeconfig kube-proxy system:kube-proxy
}

# The kubelet wants every cgroup v1 controller the kernel has mounted; this
# VM leaves a few unmounted.
cgroups() {
  local c
  for c in hugetlb net_cls,net_prio perf_event; do
    local dir="/sys/fs/cgroup/$c"
    mountpoint -q "$dir" 2>/dev/null && continue
    grep -q "^${c%%,*}[[:space:]].*1$" /proc/cgroups || continue
    mkdir -p "$dir"
    mount -t cgroup -o "$c" cgroup "$dir"
  done
}

node_network() {
  modprobe br_netfilter 2>/dev/null || true
  sysctl -qw net.ipv4.ip_forward=1
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
  mkdir -p "$STATE/cni"
  write_config "$STATE/cni/10-shale.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "shale",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$STATE/cni-ipam",
        "ranges": [[{"subnet": "$POD_SUBNET", "rangeStart": "10.244.0.10", "rangeEnd": "10.244.0.250", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

containerd_up() {
  mkdir -p "$STATE/containerd"
  write_config "$STATE/containerd/config.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Without CAP_SYS_RESOURCE (as in this VM) no process may lower its OOM
  # score: keep the kubelet's scores at or above containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$STATE/cni"
EOF
  say "Starting containerd"
  start containerd containerd --config "$STATE/containerd/config.toml"
  wait_for containerd 30 ctr --address "$CONTAINERD_SOCK" version
}

# import_image TAR: loads an OCI archive into the namespace the kubelet uses.
import_image() {
  ctr --address "$CONTAINERD_SOCK" -n k8s.io images import "$1" >/dev/null
}

images() {
  local bin=$1
  say "Importing the pause image"
  local tar="$STATE/pause.tar"
  python3 "$HERE/image.py" --name "$PAUSE_IMAGE" --out "$tar" --user 65535:65535 \
    --entrypoint /usr/local/bin/pause -- "$bin/pause"
  import_image "$tar"
}

dns_up() {
  local bin=$1
  write_config "$STATE/Corefile" <<EOF
cluster.local:53 in-addr.arpa:53 {
  bind $NODE_IP
  errors
  ready $NODE_IP:8181
  kubernetes cluster.local in-addr.arpa {
    kubeconfig $STATE/admin.kubeconfig shale
    pods insecure
  }
}
.:53 {
  bind $NODE_IP
  errors
}
EOF
  echo "nameserver $NODE_IP" | write_config "$STATE/resolv.conf"
  say "Starting CoreDNS on $NODE_IP:53 (cluster.local from the API server)"
  start coredns "$bin/coredns" -conf "$STATE/Corefile"
  wait_for CoreDNS 30 curl -sf "http://$NODE_IP:8181/ready"
}

kubelet_up() {
  local bin=$1
  mkdir -p "$STATE/kubelet"
  write_config "$STATE/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $STATE/pki/ca.crt}
authorization: {mode: Webhook}
# This machine has cgroup v1 and no systemd: cgroupfs, and v1 allowed.
cgroupDriver: cgroupfs
failCgroupV1: false
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
clusterDomain: cluster.local
clusterDNS: [$NODE_IP]
resolvConf: $STATE/resolv.conf
failSwapOn: false
# The kubelet's own OOM score: 0, as it cannot lower it without
# CAP_SYS_RESOURCE.
oomScoreAdj: 0
tlsCertFile: $STATE/pki/kubelet.crt
tlsPrivateKeyFile: $STATE/pki/kubelet.key
podCIDR: $POD_SUBNET
maxPods: 60
serializeImagePulls: false
# A test machine's disk is shared with builds: evict only when nearly full.
evictionHard: {memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
EOF
  say "Starting the kubelet (node $NODE_NAME)"
  start kubelet "$bin/kubelet" --config "$STATE/kubelet/config.yaml" \
    --kubeconfig "$STATE/kubelet.kubeconfig" --hostname-override "$NODE_NAME" \
    --node-ip "$NODE_IP" --root-dir "$STATE/kubelet/root" --cert-dir "$STATE/kubelet/pki"
  wait_for "node $NODE_NAME Ready" 120 sh -c \
    "'$bin/kubectl' --kubeconfig '$STATE/admin.kubeconfig' get node $NODE_NAME -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep True >/dev/null"
}

kube_proxy_up() {
  local bin=$1
  write_config "$STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $POD_SUBNET
hostnameOverride: $NODE_NAME
# Leave the host's conntrack table size alone.
conntrack: {maxPerCore: 0}
EOF
  say "Starting kube-proxy (iptables)"
  start kube-proxy "$bin/kube-proxy" --config "$STATE/kube-proxy.yaml"
}

# Static local PersistentVolumes on this node, in a default StorageClass.
volumes() {
  local bin=$1 i
  local kubectl=("$bin/kubectl" --kubeconfig "$STATE/admin.kubeconfig")
  {
    cat <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
EOF
    for ((i = 0; i < VOLUMES; i++)); do
      mkdir -p "$STATE/volumes/pv-$i"
      chmod 0777 "$STATE/volumes/pv-$i"
      cat <<EOF
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: local-pv-$i}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: local
  local: {path: $STATE/volumes/pv-$i}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: kubernetes.io/hostname, operator: In, values: [$NODE_NAME]}
EOF
    done
  } | "${kubectl[@]}" apply -f - >/dev/null
}

node_up() {
  local bin=$1 tool
  for tool in containerd runc ctr; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install containerd runc)"
  done
  [ -x "$CNI_BIN/bridge" ] || die "CNI plugins are missing in $CNI_BIN (apt-get install containernetworking-plugins)"
  node_pki
  cgroups
  node_network
  containerd_up
  images "$bin"
  dns_up "$bin"
  kube_proxy_up "$bin"
  kubelet_up "$bin"
  volumes "$bin"
}

up() {
  [ "$(id -u)" = 0 ] || die "up needs root (it creates a network bridge)"
  build
  local bin
  bin=$(bin_dir)
  mkdir -p "$STATE"
  pki
  network
  control_plane "$bin"
  if [ "${SHALE_K8S_NODE:-1}" = 1 ]; then
    node_up "$bin"
  fi
  say "Cluster ready: export KUBECONFIG=$STATE/admin.kubeconfig (or: eval \"\$($0 env)\")"
}

down() {
  say "Stopping the cluster"
  if [ -d "$STATE/run" ]; then
    for pidfile in "$STATE"/run/*.pid; do
      [ -f "$pidfile" ] || continue
      kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    sleep 1
    for pidfile in "$STATE"/run/*.pid; do
      [ -f "$pidfile" ] || continue
      kill -9 "$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile"
    done
  fi
  # Pods outlive the kubelet and containerd: their shims name our socket.
  pkill -9 -f "containerd-shim.*$STATE" 2>/dev/null || true
  # Pod volumes (tmpfs, bind mounts) and container root filesystems.
  grep -o " $STATE[^ ]*" /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  local bin
  bin=$(bin_dir)
  [ -x "$bin/kube-proxy" ] && "$bin/kube-proxy" --cleanup >/dev/null 2>&1 || true
  ip link del cni0 2>/dev/null || true
  rm -rf "$STATE"
}

status() {
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler \
    containerd coredns kube-proxy kubelet; do
    if [ -f "$STATE/run/$c.pid" ] && kill -0 "$(cat "$STATE/run/$c.pid")" 2>/dev/null; then
      echo "$c: running (pid $(cat "$STATE/run/$c.pid"))"
    else
      echo "$c: stopped"
    fi
  done
}

case "${1:-}" in
  build) build ;;
  up) up ;;
  down) down ;;
  status) status ;;
  env)
    echo "export KUBECONFIG=$STATE/admin.kubeconfig"
    echo "export PATH=$(bin_dir):\$PATH"
    ;;
  containerd-socket) echo "$CONTAINERD_SOCK" ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
