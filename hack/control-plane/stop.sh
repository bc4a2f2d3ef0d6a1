#!/usr/bin/env bash
# Stop the control plane started by hack/control-plane/start.sh (same --dir) and remove its
# certificates, logs and etcd data.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${PYTHON:-python3}" "${here}/../../tests/controlplane.py" stop "$@"
