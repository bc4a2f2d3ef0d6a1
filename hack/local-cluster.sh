#!/usr/bin/env bash
# A local Kubernetes to try the operator on, without Docker or kind: the real control plane
# (etcd, kube-apiserver, controller-manager, scheduler; hack/control-plane/), two simulated
# GPU nodes whose pods run as local processes (devcluster/nodesim.py) and the operator.
#
#   hack/local-cluster.sh up        # start everything; prints `export KUBECONFIG=...`
#   hack/local-cluster.sh status    # what runs, kubectl get nodes,r50t,pods
#   hack/local-cluster.sh logs POD  # a pod's output (kubectl logs needs a kubelet)
#   hack/local-cluster.sh down      # stop everything, remove its files
#   hack/local-cluster.sh demo [EXAMPLE.yaml]
#                                   # up, apply the example (default: the CPU smoke job),
#                                   # follow `kubectl get r50t` to the end, down
#
# Environment: LOCAL_CLUSTER_DIR (default ${TMPDIR:-/tmp}/resnet50-local-cluster),
# PYTHON (default .venv/bin/python), NODES (2), GPUS_PER_NODE (8), DEMO_TIMEOUT (900 s),
# RESNET50_OPERATOR_ALLOWED_HOST_PATH_PREFIXES (/tmp/resnet50-checkpoints) and the operator's
# other RESNET50_OPERATOR_* settings (docs/operator.md#operator-settings).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${LOCAL_CLUSTER_DIR:-${TMPDIR:-/tmp}/resnet50-local-cluster}"
python="${PYTHON:-${root}/.venv/bin/python}"
PATH="${python%/*}:${PATH}"
export PATH

say() { printf '[local-cluster] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

kubeconfig() { echo "${dir}/control-plane/kubeconfig"; }
# The repository's devcluster package (control plane, simulated nodes), from any directory.
devcluster=(env "PYTHONPATH=${root}${PYTHONPATH:+:${PYTHONPATH}}" "${python}" -m devcluster)

# kubectl of the same release as the control plane (hack/control-plane/versions.env)
use_control_plane_kubectl() {
  local bin
  bin=$("${devcluster[@]}" controlplane bin-dir) || die "no control plane built"
  PATH="${bin}:${PATH}"
}

# shellcheck source=lib/background.sh
source "${root}/hack/lib/background.sh"   # start, alive, stop

up() {
  [[ -x "${python}" ]] || die "${python} not found: run \`make setup\` first (or set PYTHON)"
  [[ ! -e "${dir}/control-plane" ]] || die "already up in ${dir} (\`$0 down\` first)"
  bash "${root}/hack/control-plane/build.sh"
  use_control_plane_kubectl
  mkdir -p "${dir}"
  "${devcluster[@]}" controlplane start --dir "${dir}/control-plane" \
    --node-monitor-grace-period 1h >/dev/null
  export KUBECONFIG; KUBECONFIG=$(kubeconfig)
  kubectl apply -f "${root}/manifests/crd/resnet50trainings.yaml" >/dev/null
  kubectl wait --for condition=Established --timeout 60s crd/resnet50trainings.resnet50.dev >/dev/null
  start nodes "${devcluster[@]}" nodes --kubeconfig "${KUBECONFIG}" \
    --workdir "${dir}/nodes" --nodes "${NODES:-2}" --gpus "${GPUS_PER_NODE:-8}"
  # The operator's policy allows no hostPath by default; the CPU smoke example keeps its
  # checkpoints in /tmp/resnet50-checkpoints. Set the variable to allow other directories.
  local host_paths=${RESNET50_OPERATOR_ALLOWED_HOST_PATH_PREFIXES:-/tmp/resnet50-checkpoints}
  start operator env "RESNET50_OPERATOR_ALLOWED_HOST_PATH_PREFIXES=${host_paths}" \
    "${python}" -m resnet50_operator --liveness ''
  for _ in $(seq 150); do
    [[ $(kubectl get nodes --no-headers 2>/dev/null | grep -c ' Ready ') -ge "${NODES:-2}" ]] && break
    alive nodes || die "the node simulator stopped: ${dir}/nodes.log"
    sleep 0.2
  done
  alive operator || die "the operator stopped: ${dir}/operator.log"
  say "up: control plane, ${NODES:-2} simulated nodes and the operator (logs in ${dir})"
  echo "export KUBECONFIG=${KUBECONFIG}"
}

down() {
  stop operator
  stop nodes  # it stops the pods' processes
  if [[ -e "${dir}/control-plane" ]]; then
    "${devcluster[@]}" controlplane stop --dir "${dir}/control-plane"
  fi
  rm -rf "${dir}"
}

status() {
  use_control_plane_kubectl
  export KUBECONFIG; KUBECONFIG=$(kubeconfig)
  for p in nodes operator; do
    if alive "${p}"; then say "${p}: running"; else say "${p}: not running"; fi
  done
  kubectl get nodes,resnet50trainings,pods -A -o wide
}

logs() {
  local pod=${1:?usage: $0 logs POD}
  local log='' f
  for f in "${dir}"/nodes/pods/*/"${pod}"-*/container.log; do  # the newest attempt's
    [[ -e ${f} && ( -z ${log} || ${f} -nt ${log} ) ]] && log=${f}
  done
  [[ -n "${log}" ]] || die "no log of a pod named ${pod}"
  cat "${log}"
}

demo() {
  local example=${1:-${root}/manifests/examples/resnet50-cpu-smoke.yaml}
  local name phase='' deadline=$((SECONDS + ${DEMO_TIMEOUT:-900}))
  name=$("${python}" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["metadata"]["name"])' "${example}")
  trap down EXIT
  up >/dev/null
  export KUBECONFIG; KUBECONFIG=$(kubeconfig)
  kubectl apply -f "${example}"
  while [[ ${phase} != Succeeded && ${phase} != Failed ]]; do
    ((SECONDS < deadline)) || die "not finished after ${DEMO_TIMEOUT:-900} s"
    sleep 5
    kubectl get resnet50trainings "${name}"
    phase=$(kubectl get resnet50trainings "${name}" -o jsonpath='{.status.phase}')
  done
  kubectl describe resnet50trainings "${name}"
  say "the master's last lines:"
  logs "${name}-0" | tail -n 5
  [[ ${phase} == Succeeded ]]
}

case "${1:-}" in
  up | down | status) "$1" ;;
  logs | demo) cmd=$1; shift; "${cmd}" "$@" ;;
  *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
esac
