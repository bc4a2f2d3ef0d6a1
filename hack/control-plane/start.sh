#!/usr/bin/env bash
# Start a local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler on 127.0.0.1, free ports, fresh certificates) that keeps running after this
# script exits, and wait until it is ready. Prints the admin kubeconfig's path on stdout:
#
#   export KUBECONFIG=$(hack/control-plane/start.sh)      # default --dir: $TMPDIR/resnet50-operator-control-plane
#   hack/control-plane/start.sh --dir /tmp/cp1 [--node-monitor-grace-period 1h] [--timeout 180]
#   hack/control-plane/stop.sh [--dir /tmp/cp1]
#
# The binaries come from hack/control-plane/build.sh (run it first); the logic lives in
# devcluster/controlplane.py (`python3 -m devcluster controlplane start`), which the tests
# import. Needs python3 (standard library only).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PYTHONPATH="${root}${PYTHONPATH:+:${PYTHONPATH}}"
exec "${PYTHON:-python3}" -m devcluster controlplane start "$@"
