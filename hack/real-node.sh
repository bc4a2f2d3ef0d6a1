#!/usr/bin/env bash
# A real Kubernetes node on this machine: the control plane (hack/control-plane/), one
# kubelet with containerd and runc, kube-proxy, a CNI bridge, CoreDNS as cluster DNS, our
# images built from the Dockerfile, and the operator running in the cluster from
# manifests/operator with only its RBAC. Nothing is pulled from a registry: every image is
# built here (hack/build-images.sh, devcluster/binary_image.py).
#
#   sudo hack/real-node.sh up       # build what is missing, start everything; prints
#                                   # `export KUBECONFIG=...`
#   hack/real-node.sh status        # kubectl get nodes, the system pods, trainings, pods
#   sudo hack/real-node.sh down     # stop everything, remove every container and file of it
#   sudo hack/real-node.sh demo [EXAMPLE.yaml]
#                                   # up, apply the example (default: the CPU smoke job),
#                                   # follow `kubectl get r50t` to the end, down
#   sudo hack/real-node.sh prepare  # only the builds that need no cluster: packages,
#                                   # CoreDNS, pause, both images in docker (CI runs it
#                                   # beside the control plane's build)
#
# Needs root (containerd, the kubelet, iptables), Debian's packages (installed when
# missing: containerd, runc, containernetworking-plugins, iptables, conntrack, docker.io
# and debootstrap for the image build), Go (the Kubernetes and CoreDNS builds) and gcc
# (the pause binary). Builds are cached outside the repository:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/resnet50-operator/control-plane/<release>/bin
#       Kubernetes, with kubelet and kube-proxy (hack/control-plane/build.sh)
#   ${XDG_CACHE_HOME:-$HOME/.cache}/resnet50-operator/node/<release>/bin
#       coredns (from its Go module) and pause (from Kubernetes' pause.c)
#   docker's and containerd's image stores: the images are built and loaded once, and
#       again only when their inputs change.
#
# Environment: REAL_NODE_DIR (run state, logs; default /tmp/resnet50-real-node),
# REAL_NODE_STORE (containerd's image store, kept by down; /var/lib/resnet50-real-node),
# PYTHON (default .venv/bin/python), NODE_NAME (resnet50-node), DEMO_TIMEOUT (900 s).
set -Eeuo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${REAL_NODE_DIR:-/tmp/resnet50-real-node}"
store="${REAL_NODE_STORE:-/var/lib/resnet50-real-node}"
python="${PYTHON:-${root}/.venv/bin/python}"
node="${NODE_NAME:-resnet50-node}"
cache="${XDG_CACHE_HOME:-${HOME}/.cache}/resnet50-operator"
pinned() { sed -n "s/^$1=//p" "${root}/hack/control-plane/versions.env"; }
k8s_version="${RESNET50_K8S_VERSION:-$(pinned K8S_VERSION)}"
coredns_version="$(pinned COREDNS_VERSION)"
pause_version="$(pinned PAUSE_VERSION)"
node_bin="${cache}/node/${k8s_version}/bin"
pod_cidr=10.244.0.0/24
cluster_dns=10.0.0.10          # in the control plane's service range, 10.0.0.0/24
socket="${dir}/containerd.sock"
PATH="${python%/*}:${PATH}"
export PATH

say() { printf '[real-node %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "error: $*"; exit 1; }
need_root() { [[ $(id -u) -eq 0 ]] || die "$1 needs root: run: sudo $0 $1"; }

kubeconfig() { echo "${dir}/control-plane/kubeconfig"; }
# The repository's devcluster package (control plane, images), from any directory.
devcluster=(env "PYTHONPATH=${root}${PYTHONPATH:+:${PYTHONPATH}}" "${python}" -m devcluster)
ctr_() { ctr --address "${socket}" --namespace k8s.io "$@"; }

# shellcheck source=lib/background.sh
source "${root}/hack/lib/background.sh"   # start, alive, stop
wait_for() {  # SECONDS WHAT COMMAND...: poll COMMAND until it succeeds
  local seconds=$1 what=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "${what} not ready after ${seconds}s (logs in ${dir})"
    sleep 0.5
  done
}

# --- prerequisites and builds ---------------------------------------------------------
install_packages() {
  local missing=() cmd
  declare -A provides=([containerd]=containerd [runc]=runc [iptables]=iptables
    [conntrack]=conntrack [docker]=docker.io [debootstrap]=debootstrap)
  for cmd in "${!provides[@]}"; do command -v "${cmd}" >/dev/null || missing+=("${provides[${cmd}]}"); done
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  ((${#missing[@]} == 0)) && return 0
  say "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Where systemd runs, Debian's packages start their daemons: this script runs its own.
  if [[ " ${missing[*]} " == *" containerd "* || " ${missing[*]} " == *" docker.io "* ]]; then
    pkill -x dockerd 2>/dev/null || true
    pkill -x containerd 2>/dev/null || true
  fi
}

build_node_binaries() {
  local stamp="${node_bin}/.built" want="coredns=${coredns_version}-minimal pause=${pause_version}"
  [[ -f ${stamp} && $(cat "${stamp}") == "${want}" ]] && return 0
  say "building CoreDNS ${coredns_version} (Go module) and pause ${pause_version} (Kubernetes' pause.c)"
  local work; work=$(mktemp -d "${cache}/node-build.XXXXXX")
  mkdir -p "${node_bin}"
  (
    export HOME="${work}/home" GOPATH="${work}/gopath" GOMODCACHE="${work}/gopath/pkg/mod" \
      GOCACHE="${work}/go-build" GOFLAGS=-mod=mod CGO_ENABLED=0
    mkdir -p "${work}/coredns" && cd "${work}/coredns"
    go mod init resnet50-operator.local/coredns >/dev/null 2>&1
    # CoreDNS with the plugins of hack/real-node/coredns.yaml's Corefile only, in the
    # order of CoreDNS's plugin.cfg: the stock binary also compiles the cloud DNS plugins
    # (AWS, Azure, Google SDKs), which take most of its build time.
    cat >main.go <<'EOF'
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func init() {
	dnsserver.Directives = []string{"reload", "ready", "health", "errors", "log",
		"loadbalance", "cache", "kubernetes", "loop"}
}

func main() { coremain.Run() }
EOF
    { go get "github.com/coredns/coredns@${coredns_version}" && go mod tidy \
        && go build -trimpath -ldflags "-s -w" -o "${node_bin}/coredns" .; } >build.log 2>&1 \
      || { tail -30 build.log >&2; exit 1; }
    # pause.c ships in the k8s.io/kubernetes module (build/pause/linux/pause.c).
    src=$(go mod download -json "k8s.io/kubernetes@${k8s_version}" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
    gcc -Os -static -Wall -Werror -DVERSION="v${pause_version}-resnet50" \
      -o "${node_bin}/pause" "${src}/build/pause/linux/pause.c"
  ) || { chmod -R u+w "${work}"; rm -rf "${work}"; die "the node binaries did not build"; }
  chmod -R u+w "${work}"; rm -rf "${work}"
  echo "${want}" >"${stamp}"
}

containerd_has() {  # NAME LABEL=VALUE: is the image there, with that label?
  ctr_ images ls "name==$1" 2>/dev/null | awk -v l="$2" 'NR > 1 && index($0, l) {f=1} END {exit !f}'
}

# What the trainer and operator images are built from (the Dockerfile's context, see
# .dockerignore): when containerd holds both with this label, nothing is built or loaded.
image_inputs() {
  (cd "${root}" && git ls-files -z -co --exclude-standard -- Dockerfile .dockerignore \
      pyproject.toml README.md trainer operator ':!:**/__pycache__/**' \
    | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
}

load_images() {
  local img version
  # The pause image (the sandbox of every pod) and CoreDNS: one static binary each, with
  # the binary's digest as label.
  for img in "registry.k8s.io/pause:${pause_version}=pause" \
             "registry.k8s.io/coredns/coredns:${coredns_version}=coredns"; do
    local name=${img%=*} binary=${node_bin}/${img#*=} sum
    sum=$(sha256sum "${binary}" | cut -c1-16)
    containerd_has "${name}" "resnet50.dev/inputs=${sum}" && continue
    "${devcluster[@]}" binary-image --binary "${binary}" --name "${name}" \
      | ctr_ images import - >/dev/null
    ctr_ images label "${name}" "resnet50.dev/inputs=${sum}" >/dev/null
    say "loaded ${name}"
  done
  # The trainer and the operator: our Dockerfile, built by hack/build-images.sh (docker,
  # from a debootstrap base) and exported into containerd, when their inputs changed.
  local inputs need=() target
  inputs=$(image_inputs)
  version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "${root}/pyproject.toml")
  for target in operator trainer; do
    containerd_has "docker.io/resnet50-operator/${target}:${version}" "resnet50.dev/inputs=${inputs}" \
      || need+=("${target}")
  done
  ((${#need[@]} == 0)) && { say "images up to date (inputs ${inputs})"; return 0; }
  say "building and loading ${need[*]} (inputs ${inputs}; log: ${dir}/build-images.log)"
  LOAD_INTO_CONTAINERD="${socket}" IMAGE_INPUTS="${inputs}" \
    bash "${root}/hack/build-images.sh" "${need[@]}" >"${dir}/build-images.log" 2>&1 \
    || { tail -30 "${dir}/build-images.log" >&2; die "the image build failed"; }
  echo "${inputs}" >"${cache}/node/images-built"
}

# The kubelet's CRI names each image it uses once more, by its ID (sha256:...): when one of
# our tags moves to a new build, that name keeps the old build (6 GB for the trainer) for
# ever. Names by ID or digest whose image no tag points to any more go; containerd then
# collects the content.
remove_replaced_images() {
  local stale
  mapfile -t stale < <(ctr_ images ls 2>/dev/null | awk 'NR > 1 {
      ref[$1] = $3; if ($1 !~ /^sha256:|@sha256:/) tagged[$3] = 1 }
    END { for (r in ref) if (r ~ /^sha256:|@sha256:/ && !(ref[r] in tagged)) print r }')
  ((${#stale[@]} == 0)) || { ctr_ images rm "${stale[@]}" >/dev/null; say "removed ${#stale[@]} replaced image name(s)"; }
}

# The builds that need no running node, for a machine that has other work meanwhile (CI
# runs this while the control plane compiles: mostly downloads and disk against its CPU).
# up then finds CoreDNS and pause built, and docker's layers of both images cached.
prepare() {
  need_root prepare
  install_packages
  build_node_binaries
  local inputs; inputs=$(image_inputs)
  if [[ $(cat "${cache}/node/images-built" 2>/dev/null) == "${inputs}" ]]; then
    say "images built before (inputs ${inputs})"; return 0
  fi
  say "building both images into docker (inputs ${inputs})"
  bash "${root}/hack/build-images.sh" operator trainer
}

# --- the node ---------------------------------------------------------------------------
host_address() {  # the address of the default route's interface: pods reach it
  ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p'
}

write_configs() {
  local pki="${dir}/control-plane/pki"
  mkdir -p "${dir}/cni" "${dir}/kubelet"
  cat >"${dir}/containerd.toml" <<EOF
version = 2
root = "${store}/containerd"
state = "${dir}/containerd-state"
[grpc]
  address = "${socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:${pause_version}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "${root}/hack/real-node/runc-oom-floor"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${dir}/cni"
EOF
  cat >"${dir}/cni/10-resnet50.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "resnet50-pods",
  "plugins": [
    {"type": "bridge", "bridge": "resnet50br0", "isGateway": true, "ipMasq": true,
     "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "${pod_cidr}"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "${dir}/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  cat >"${dir}/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# These VMs run cgroup v1, which the kubelet refuses since v1.35 unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://${socket}
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ${pki}/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [${cluster_dns}]
resolvConf: /etc/resolv.conf
failSwapOn: false
readOnlyPort: 0
podCIDR: ${pod_cidr}
podLogsDir: ${dir}/pod-logs
# A shared development disk: neither evict pods nor collect our images for its fill level.
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
# Our own OOM score as it is: lowering it needs CAP_SYS_RESOURCE (see runc-oom-floor).
oomScoreAdj: 0
EOF
  cat >"${dir}/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: ${dir}/control-plane/system-kube-proxy.kubeconfig}
hostnameOverride: ${node}
mode: iptables
clusterCIDR: ${pod_cidr}
# Leave the host's conntrack table size and our own OOM score as they are.
conntrack: {maxPerCore: 0}
oomScoreAdj: 0
EOF
}

up() {
  need_root up
  [[ -x "${python}" ]] || die "${python} not found: run \`make setup\` first (or set PYTHON)"
  [[ ! -e "${dir}/control-plane" ]] || die "already up in ${dir} (\`$0 down\` first)"
  local t0=${SECONDS}
  install_packages
  bash "${root}/hack/control-plane/build.sh"
  build_node_binaries
  local bin; bin=$("${devcluster[@]}" controlplane bin-dir)
  PATH="${bin}:${PATH}"
  local addr; addr=$(host_address)
  [[ -n ${addr} ]] || die "no host address found (ip -4 route get 1.1.1.1 gave none)"
  mkdir -p "${dir}" "${store}"
  local t_built=${SECONDS}

  # Pods are routed through the host, and Services are iptables rules on bridged traffic.
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1

  "${devcluster[@]}" controlplane start --dir "${dir}/control-plane" \
    --address "${addr}" >/dev/null 2>"${dir}/control-plane.log" \
    || { cat "${dir}/control-plane.log" >&2; die "the control plane did not start"; }
  export KUBECONFIG; KUBECONFIG=$(kubeconfig)
  "${devcluster[@]}" controlplane kubeconfig --dir "${dir}/control-plane" \
    --user "system:node:${node}" --group system:nodes >/dev/null
  "${devcluster[@]}" controlplane kubeconfig --dir "${dir}/control-plane" \
    --user system:kube-proxy >/dev/null
  write_configs

  start containerd containerd --config "${dir}/containerd.toml"
  wait_for 30 containerd ctr_ version
  load_images
  remove_replaced_images
  local t_images=${SECONDS}

  start kubelet "${bin}/kubelet" --config "${dir}/kubelet.yaml" \
    --kubeconfig "${dir}/control-plane/system-node-${node}.kubeconfig" \
    --hostname-override "${node}" --node-ip "${addr}" --root-dir "${dir}/kubelet" \
    --cert-dir "${dir}/kubelet/pki"
  start kube-proxy "${bin}/kube-proxy" --config "${dir}/kube-proxy.yaml"
  wait_for 120 "node ${node}" kubectl wait --for condition=Ready "node/${node}" --timeout 1s

  kubectl apply -f "${root}/hack/real-node/coredns.yaml" >/dev/null
  kubectl apply -k "${root}/manifests/operator" >/dev/null
  # The operator's policy allows no hostPath by default; the CPU smoke example (and
  # tests/node/) keep their checkpoints in this one (docs/security.md).
  kubectl -n resnet50-operator set env deployment/resnet50-operator \
    RESNET50_OPERATOR_ALLOWED_HOST_PATH_PREFIXES=/tmp/resnet50-checkpoints >/dev/null
  kubectl -n kube-system rollout status deployment/coredns --timeout 120s >/dev/null \
    || die "CoreDNS did not start: kubectl -n kube-system describe pods"
  kubectl -n resnet50-operator rollout status deployment/resnet50-operator --timeout 120s >/dev/null \
    || die "the operator did not start: kubectl -n resnet50-operator describe pods"
  say "up in $((SECONDS - t0))s (builds and checks $((t_built - t0))s, containerd and images $((t_images - t_built))s):" \
    "node ${node} at ${addr}, containerd, CoreDNS and the operator in the cluster (logs in ${dir})"
  echo "export KUBECONFIG=${KUBECONFIG}"
}

status() {
  export KUBECONFIG; KUBECONFIG=$(kubeconfig)
  [[ -f ${KUBECONFIG} ]] || { say "not up (no ${KUBECONFIG})"; return 1; }
  local bin; bin=$("${devcluster[@]}" controlplane bin-dir); PATH="${bin}:${PATH}"
  local p; for p in containerd kubelet kube-proxy; do
    if alive "${p}"; then say "${p}: running"; else say "${p}: NOT running (${dir}/${p}.log)"; fi
  done
  kubectl get nodes -o wide
  kubectl get pods -A -o wide
  kubectl get r50t -A
}

down() {
  need_root down
  if [[ -f $(kubeconfig) ]] && "${devcluster[@]}" controlplane bin-dir >/dev/null 2>&1; then
    PATH="$("${devcluster[@]}" controlplane bin-dir):${PATH}"
    # The operator first, so that it does not recreate what is removed below.
    KUBECONFIG=$(kubeconfig) kubectl delete namespace resnet50-operator --wait=false >/dev/null 2>&1 || true
  fi
  stop kube-proxy
  stop kubelet
  if alive containerd; then
    local c
    for c in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "${c}" >/dev/null 2>&1 || true; done
    for c in $(ctr_ tasks ls -q 2>/dev/null); do
      for _ in $(seq 50); do ctr_ tasks delete "${c}" >/dev/null 2>&1 && break; sleep 0.1; done
    done
    for c in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "${c}" >/dev/null 2>&1 || true; done
  fi
  stop containerd
  pkill -f "containerd-shim-runc-v2 -namespace k8s.io -id .* -address ${socket}" 2>/dev/null || true
  local proxy="${cache}/control-plane/${k8s_version}/bin/kube-proxy"
  if [[ -x ${proxy} ]]; then "${proxy}" --cleanup >/dev/null 2>&1 || true; fi  # its iptables rules
  if [[ -d ${dir} ]]; then
    "${devcluster[@]}" controlplane stop --dir "${dir}/control-plane" >/dev/null 2>&1 || true
    # Pod volumes (tmpfs, projected tokens) and container root filesystems.
    grep -F " ${dir}/" /proc/self/mounts | awk '{print $2}' | sort -r | while read -r m; do
      umount -l "${m}" 2>/dev/null || true
    done || true  # none left
    # The kubelet's links to the pods' logs, which lived in the directory.
    find /var/log/containers -maxdepth 1 -type l -lname "${dir}/*" -delete 2>/dev/null || true
    rm -rf "${dir}"
  fi
  ip link delete resnet50br0 2>/dev/null || true
  remove_chains
  say "down"
}

# The iptables chains that stay behind once everything is stopped: the bridge plugin's
# masquerading of pods whose sandboxes were killed (CNI-*, commented with our network's
# name) and the kubelet's own (KUBE-FIREWALL, canaries; kube-proxy --cleanup removed its).
# The KUBE-* ones only when no other kubelet runs on this machine.
remove_chains() {
  local cmd table chain ours
  for cmd in iptables ip6tables; do
    for table in filter nat mangle; do
      ours=$("${cmd}" -t "${table}" -S 2>/dev/null | awk '
        /resnet50-pods/ && $1 == "-A" && $2 ~ /^CNI-/ {print $2}
        $1 == "-N" && $2 ~ /^KUBE-/ {print $2}' | sort -u)
      pgrep -x kubelet >/dev/null && ours=$(grep -v '^KUBE-' <<<"${ours}")
      for chain in ${ours}; do
        "${cmd}" -t "${table}" -S | grep -E -- "-j ${chain}( |$)" | grep -v "^-A ${chain} " \
          | sed 's/^-A/-D/' | while read -r rule; do eval "${cmd} -t ${table} ${rule}"; done || true
        "${cmd}" -t "${table}" -F "${chain}" || true
      done
      for chain in ${ours}; do "${cmd}" -t "${table}" -X "${chain}" 2>/dev/null || true; done
    done
  done
}

demo() {
  local example=${1:-${root}/manifests/examples/resnet50-cpu-smoke.yaml}
  up
  export KUBECONFIG; KUBECONFIG=$(kubeconfig)
  trap down EXIT
  kubectl apply -f "${example}"
  local name; name=$(kubectl get -f "${example}" -o jsonpath='{.metadata.name}')
  local deadline=$((SECONDS + ${DEMO_TIMEOUT:-900})) phase=""
  kubectl get r50t "${name}" --watch &
  local watcher=$!
  until [[ ${phase} == Succeeded || ${phase} == Failed ]]; do
    ((SECONDS < deadline)) || { kill "${watcher}"; die "${name} did not finish in ${DEMO_TIMEOUT:-900}s"; }
    sleep 2
    phase=$(kubectl get r50t "${name}" -o jsonpath='{.status.phase}')
  done
  kill "${watcher}" 2>/dev/null || true
  kubectl describe r50t "${name}"
  [[ ${phase} == Succeeded ]]
}

case "${1:-}" in
  up) up ;;
  status) status ;;
  down) down ;;
  demo) shift; demo "$@" ;;
  prepare) prepare ;;
  *) sed -n '2,/^set -E/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
