#!/usr/bin/env bash
# End to end on kind: a cluster, both images, the operator, the CPU smoke training.
# Walk-through and expected output: docs/kind.md.
#
#   hack/kind-e2e.sh                 # create, build, load, deploy, train, clean up
#   KILL_A_POD=1 hack/kind-e2e.sh    # ... and delete pod resnet50-cpu-smoke-1 mid-run
#   hack/kind-e2e.sh --kill-a-pod    # the same
#   hack/kind-e2e.sh --keep-cluster  # KEEP_CLUSTER=1
#
# Needs docker, kind and kubectl on PATH, registry access (kind's node image, the
# Dockerfile's base image), PyPI, and about 4 CPUs: the two trainer pods request 1 CPU
# each next to the control plane's own requests. SKIP_BUILD=1 uses images built before,
# e.g. by hack/build-images.sh.
#
# Environment:
#   CLUSTER_NAME   kind cluster name (resnet50-e2e)
#   KEEP_CLUSTER   1: leave the cluster (and the training) in place at the end
#   KILL_A_POD     1: delete pod resnet50-cpu-smoke-1 once the training runs, to show
#                  the operator restarting the whole group from its checkpoints
#   SKIP_BUILD     1: use the images already in docker instead of building them
#   TIMEOUT        seconds to wait for the training to succeed (900)
#   TRAINER_BUILD_FLAGS  more `docker build` flags for the trainer image, e.g.
#                  "--build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu"
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

CLUSTER_NAME=${CLUSTER_NAME:-resnet50-e2e}
KEEP_CLUSTER=${KEEP_CLUSTER:-0}
KILL_A_POD=${KILL_A_POD:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
TIMEOUT=${TIMEOUT:-900}
read -r -a TRAINER_BUILD_FLAGS <<< "${TRAINER_BUILD_FLAGS:-}"

for arg in "$@"; do
    case $arg in
        --kill-a-pod) KILL_A_POD=1 ;;
        --keep-cluster) KEEP_CLUSTER=1 ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
    esac
done

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
TRAINER_IMAGE=resnet50-operator/trainer:$VERSION
OPERATOR_IMAGE=resnet50-operator/operator:$VERSION
EXAMPLE=manifests/examples/resnet50-cpu-smoke.yaml
TRAINING=resnet50-cpu-smoke
KUBECTL=(kubectl --context "kind-$CLUSTER_NAME")

step() { printf '\n==> %s\n' "$*"; }

for tool in docker kind kubectl; do
    command -v "$tool" >/dev/null || { echo "$tool is not on PATH" >&2; exit 1; }
done

CREATED=0   # 1: this script created the cluster, so it deletes it at the end
cleanup() {
    status=$?
    trap - EXIT
    if [ "$status" -ne 0 ] && kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
        step "failed (exit $status); the state of the cluster"
        "${KUBECTL[@]}" get r50t,pods -A -o wide || true
        "${KUBECTL[@]}" -n resnet50-operator logs deployment/resnet50-operator --tail 30 || true
    fi
    if [ "$CREATED" -eq 1 ] && [ "$KEEP_CLUSTER" != 1 ]; then
        step "deleting cluster $CLUSTER_NAME"
        kind delete cluster --name "$CLUSTER_NAME" || true
    elif kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
        step "keeping cluster $CLUSTER_NAME (remove it with: kind delete cluster --name $CLUSTER_NAME)"
    fi
    exit "$status"
}
trap cleanup EXIT

step "creating kind cluster $CLUSTER_NAME"
if kind get clusters | grep -qx "$CLUSTER_NAME"; then
    echo "cluster $CLUSTER_NAME exists: using it, and keeping it at the end"
else
    CREATED=1
    kind create cluster --name "$CLUSTER_NAME" --wait 120s
fi

if [ "$SKIP_BUILD" != 1 ]; then
    step "building $OPERATOR_IMAGE"
    docker build --target operator --tag "$OPERATOR_IMAGE" .
    step "building $TRAINER_IMAGE (CPU nodes: the default base, torch from PyPI)"
    docker build --target trainer --tag "$TRAINER_IMAGE" "${TRAINER_BUILD_FLAGS[@]}" .
fi

step "loading both images into the nodes"
kind load docker-image --name "$CLUSTER_NAME" "$OPERATOR_IMAGE" "$TRAINER_IMAGE"

step "deploying the operator (kubectl apply -k manifests/operator)"
"${KUBECTL[@]}" apply -k manifests/operator
# The operator's policy allows no hostPath by default; the example keeps its checkpoints in
# this one (docs/security.md).
"${KUBECTL[@]}" -n resnet50-operator set env deployment/resnet50-operator \
    RESNET50_OPERATOR_ALLOWED_HOST_PATH_PREFIXES=/tmp/resnet50-checkpoints
"${KUBECTL[@]}" wait --for condition=established --timeout 60s \
    crd/resnet50trainings.resnet50.dev
"${KUBECTL[@]}" -n resnet50-operator rollout status deployment/resnet50-operator --timeout 180s

step "starting the training ($EXAMPLE)"
# A training left from an earlier run on a kept cluster would report its old phase.
"${KUBECTL[@]}" delete -f "$EXAMPLE" --ignore-not-found --wait
"${KUBECTL[@]}" apply -f "$EXAMPLE"

step "waiting up to ${TIMEOUT}s for phase Succeeded"
deadline=$((SECONDS + TIMEOUT))
killed=0
phase=""
while :; do
    phase=$("${KUBECTL[@]}" get r50t "$TRAINING" -o jsonpath='{.status.phase}' || true)
    printf '\n%s\n' "$(date +%T)"
    "${KUBECTL[@]}" get r50t "$TRAINING" || true
    "${KUBECTL[@]}" get pods -l "resnet50.dev/training=$TRAINING" \
        -L resnet50.dev/attempt --no-headers 2>/dev/null || true
    case $phase in
        Succeeded) break ;;
        Failed) echo "the training failed" >&2; break ;;
    esac
    if [ "$KILL_A_POD" = 1 ] && [ "$killed" -eq 0 ] && [ "$phase" = Running ]; then
        step "deleting pod $TRAINING-1 mid-run: the operator restarts the whole group"
        "${KUBECTL[@]}" delete pod "$TRAINING-1" --wait=false
        killed=1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "timed out after ${TIMEOUT}s in phase ${phase:-<none>}" >&2
        break
    fi
    sleep 5
done

step "kubectl describe r50t $TRAINING"
"${KUBECTL[@]}" describe r50t "$TRAINING"
step "the trainer's last lines (rank 0)"
"${KUBECTL[@]}" logs "$TRAINING-0" --tail 5 || true

[ "$phase" = Succeeded ]
step "passed"
