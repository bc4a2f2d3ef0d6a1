#!/usr/bin/env bash
# Build a real Kubernetes (etcd + kube-apiserver + kube-controller-manager +
# kube-scheduler and kubectl for the control plane; kubelet and kube-proxy for the real
# node of hack/real-node.sh) for the tests and the local clusters, from the Go module
# proxy only: no Docker engine, no kind, no release download.
#
#   hack/control-plane/build.sh            # build once, then exit at once
#   hack/control-plane/build.sh --force    # rebuild even if the cache is there
#   RESNET50_K8S_VERSION=v1.34.4 hack/control-plane/build.sh   # another release
#
# The release is K8S_VERSION in hack/control-plane/versions.env (the tests read it there
# too), or $RESNET50_K8S_VERSION; etcd's is ETCD_VERSION there, or $RESNET50_ETCD_VERSION.
# Where it goes: $RESNET50_CONTROL_PLANE_DIR, by default
#   ${XDG_CACHE_HOME:-$HOME/.cache}/resnet50-operator/control-plane/$K8S_VERSION
# with bin/{etcd,kube-apiserver,kube-controller-manager,kube-scheduler,kubectl,kubelet,
# kube-proxy} and a stamp file `.built`. Nothing is written inside the repository.
#
# How: two throw-away Go modules under the cache's build/ directory.
#  * Kubernetes: a module that requires k8s.io/kubernetes $K8S_VERSION. Its go.mod
#    requires the staging modules (k8s.io/api, k8s.io/apiserver, ...) at v0.0.0 and
#    replaces them with ./staging paths that only exist in its own repository, so the
#    throw-away module pins each of them with a `replace` to the matching published
#    v0.X.Y (v1.37.2 -> v0.37.2). The version variables that upstream's build sets with
#    -ldflags are set the same way, so `kubectl version` and /version report the release.
#  * etcd: a module that requires go.etcd.io/etcd/server/v3 $ETCD_VERSION (the etcd
#    minor that this Kubernetes release is built and tested against) and builds its main
#    package, which is the etcd server binary.
# Go's module and build caches live in the build directory too and are deleted with it.
#
# Needs Go >= the `go` line of k8s.io/kubernetes's go.mod (1.26 for v1.37); where the
# machine's Go is older, export GOTOOLCHAIN=go1.27.3 and the go command fetches that
# toolchain from the module proxy. A cold build takes about 15 minutes on 2 cores and
# needs about 5 GiB of disk while it runs; the cache keeps about 370 MiB of binaries.
set -Eeuo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pinned() { sed -n "s/^$1=//p" "${here}/versions.env"; }
K8S_VERSION="${RESNET50_K8S_VERSION:-$(pinned K8S_VERSION)}"
ETCD_VERSION="${RESNET50_ETCD_VERSION:-$(pinned ETCD_VERSION)}"
# Bump when the recipe below changes in a way that needs a rebuild.
RECIPE=3

CP_DIR="${RESNET50_CONTROL_PLANE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/resnet50-operator/control-plane/${K8S_VERSION}}"
BIN_DIR="${CP_DIR}/bin"
STAMP="${CP_DIR}/.built"
WORK="${CP_DIR}/build"
K8S_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
BINARIES=(etcd "${K8S_COMMANDS[@]}")

BUILD_NAME="control-plane build"
# shellcheck source=hack/lib/cached-build.sh
source "${here}/../lib/cached-build.sh"
parse_build_args "$@"
[[ ${K8S_VERSION} =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] \
  || die "the Kubernetes version must be a release such as v1.37.2, not '${K8S_VERSION}'"
K8S_MINOR=${BASH_REMATCH[1]}
STAGING_VERSION="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"

cache_complete() {
  [[ -f "${STAMP}" ]] || return 1
  grep -qx "recipe=${RECIPE}" "${STAMP}" || return 1
  local b
  for b in "${BINARIES[@]}"; do
    [[ -x "${BIN_DIR}/${b}" ]] || return 1
  done
}

build_once "${CP_DIR}" cache_complete RESNET50_CONTROL_PLANE_DIR

command -v go >/dev/null 2>&1 || die "go is not on PATH (Go >= 1.26 builds Kubernetes ${K8S_VERSION})"
started=$(date +%s)
log "building Kubernetes ${K8S_VERSION} and etcd ${ETCD_VERSION} into ${CP_DIR}"

go_in_build_tree kubernetes etcd
mkdir -p "${BIN_DIR}"

# --- 1. Kubernetes: a module that pins every staging module to its release -------------
cd "${WORK}/kubernetes"
go mod init resnet50-operator.local/control-plane >/dev/null 2>&1
log "go mod download k8s.io/kubernetes@${K8S_VERSION}"
k8s_mod=$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
[[ -f "${k8s_mod}" ]] || die "the module proxy did not serve k8s.io/kubernetes@${K8S_VERSION}"
# The staging modules are the ones k8s.io/kubernetes requires at v0.0.0.
mapfile -t staging < <(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "${k8s_mod}")
[[ ${#staging[@]} -gt 10 ]] || die "found no staging modules in ${k8s_mod}"
go_line=$(awk '$1 == "go" {print $2; exit}' "${k8s_mod}")
go mod edit -go="${go_line}" -require="k8s.io/kubernetes@${K8S_VERSION}"
for m in "${staging[@]}"; do
  go mod edit -replace="${m}=${m}@${STAGING_VERSION}"
done
log "go ${go_line}; ${#staging[@]} staging modules pinned to ${STAGING_VERSION}"
{
  printf '//go:build tools\n\npackage tools\n\nimport (\n'
  for c in "${K8S_COMMANDS[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "${c}"; done
  printf ')\n'
} >tools.go
log "go mod tidy (downloads the dependencies; log: ${WORK}/kubernetes/tidy.log)"
go mod tidy >tidy.log 2>&1 || { tail -30 tidy.log >&2; die "go mod tidy for k8s.io/kubernetes@${K8S_VERSION} failed"; }

# What upstream's hack/lib/version.sh stamps into every binary.
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X ${pkg}.gitVersion=${K8S_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${K8S_MINOR}"
  ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${build_date}"
done
pkgs=()
for c in "${K8S_COMMANDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/${c}"); done
log "go build ${K8S_COMMANDS[*]} (about 13 min on 2 cores; log: ${WORK}/kubernetes/build.log)"
go build -trimpath -ldflags "${ldflags}" -o "${BIN_DIR}/" "${pkgs[@]}" >build.log 2>&1 \
  || { tail -40 build.log >&2; die "go build of Kubernetes ${K8S_VERSION} failed"; }

# --- 2. etcd -------------------------------------------------------------------------
cd "${WORK}/etcd"
go mod init resnet50-operator.local/etcd >/dev/null 2>&1
log "go build go.etcd.io/etcd/server/v3@${ETCD_VERSION} (log: ${WORK}/etcd/build.log)"
{ go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" \
    && go build -trimpath -ldflags "-s -w" -o "${BIN_DIR}/etcd" go.etcd.io/etcd/server/v3; } >build.log 2>&1 \
  || { tail -40 build.log >&2; die "go build of etcd ${ETCD_VERSION} failed"; }
cd /

# --- 3. Check and stamp --------------------------------------------------------------
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
  v=$("${BIN_DIR}/${b}" --version 2>&1) || die "${BIN_DIR}/${b} --version failed: ${v}"
  [[ "${v}" == "Kubernetes ${K8S_VERSION}" ]] || die "${b} reports '${v}', expected 'Kubernetes ${K8S_VERSION}'"
done
kubectl_version=$("${BIN_DIR}/kubectl" version --client 2>/dev/null | awk '/^Client Version/ {print $3}')
[[ "${kubectl_version}" == "${K8S_VERSION}" ]] || die "kubectl reports '${kubectl_version}', expected '${K8S_VERSION}'"
etcd_version=$("${BIN_DIR}/etcd" --version | awk '/^etcd Version/ {print $3}')
[[ "v${etcd_version}" == "${ETCD_VERSION}" ]] || die "etcd reports '${etcd_version}', expected '${ETCD_VERSION}'"

elapsed=$(( $(date +%s) - started ))
cat >"${STAMP}.tmp" <<EOF
recipe=${RECIPE}
kubernetes=${K8S_VERSION}
etcd=${ETCD_VERSION}
go=$(go version | awk '{print $3}')
built=${build_date}
build_seconds=${elapsed}
EOF
mv "${STAMP}.tmp" "${STAMP}"

if [[ "${RESNET50_CONTROL_PLANE_KEEP_BUILD:-0}" != 1 ]]; then
  log "removing the build tree ($(du -sh "${WORK}" 2>/dev/null | cut -f1)); RESNET50_CONTROL_PLANE_KEEP_BUILD=1 keeps it"
  chmod -R u+w "${WORK}" 2>/dev/null || true   # go's module cache files are read-only
  rm -rf "${WORK}"
fi
log "done in ${elapsed}s: $(du -sh "${BIN_DIR}" | cut -f1) in ${BIN_DIR}"
ls -l "${BIN_DIR}" >&2
