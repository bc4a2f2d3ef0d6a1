#!/usr/bin/env bash
# Stop the control plane started by hack/control-plane/start.sh (same --dir) and remove its
# certificates, logs and etcd data.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PYTHONPATH="${root}${PYTHONPATH:+:${PYTHONPATH}}"
exec "${PYTHON:-python3}" -m devcluster controlplane stop "$@"
