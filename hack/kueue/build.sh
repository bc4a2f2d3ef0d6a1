#!/usr/bin/env bash
# Build Kueue's manager (sigs.k8s.io/kueue/cmd/kueue) for the `kueue` test tier and the
# local clusters, from the Go module proxy only: no image, no release download, no clone.
#
#   hack/kueue/build.sh            # build once, then exit at once
#   hack/kueue/build.sh --force    # rebuild even if the cache is there
#   RESNET50_KUEUE_VERSION=v0.16.2 hack/kueue/build.sh   # another release
#
# The release is KUEUE_VERSION in hack/kueue/versions.env (devcluster/kueue.py reads it
# there too), or $RESNET50_KUEUE_VERSION. Where it goes: $RESNET50_KUEUE_DIR, by default
#   ${XDG_CACHE_HOME:-$HOME/.cache}/resnet50-operator/kueue/$KUEUE_VERSION
# with
#   bin/kueue                          the manager (`kueue --config FILE`)
#   config/crd/bases/*.yaml            its CustomResourceDefinitions
#   config/crd/kustomization.yaml, patches/   which CRDs convert through its webhook
#   config/webhook/manifests.yaml      its admission webhooks (paths, rules)
#   config/rbac/role.yaml              what its ServiceAccount may do (for reference)
#   config/manager/controller_manager_config.yaml   its default Configuration
#   LICENSE
# and a stamp file `.built`. Those are copies of the module's config/components/ files:
# nothing of Kueue is committed to, or written inside, the repository.
#
# How: a throw-away Go module under the cache's build/ directory that requires
# sigs.k8s.io/kueue $KUEUE_VERSION; its main package is a copy of Kueue's cmd/kueue/main.go
# in which one line differs: the metrics endpoint's certificate directory, fixed upstream
# to /etc/kueue/metrics/certs, is $KUEUE_METRICS_CERT_DIR when that is set (see step 2).
# Kueue's go.mod has no replace directives (checked below), so the throw-away module
# selects exactly the versions Kueue's own go.mod requires (k8s.io/* v0.35.3 and
# controller-runtime v0.23.3 for v0.17.0). The version variables that Kueue's Makefile
# sets with -ldflags are set the same way. Go's module and build caches live in the build
# directory and are deleted with it.
#
# Needs Go >= the `go` line of Kueue's go.mod (1.25.0 for v0.17.0); where the machine's Go
# is older, export GOTOOLCHAIN=go1.27.3 and the go command fetches that toolchain from the
# module proxy. A cold build took 8.5 minutes on this 2-core machine (Go 1.26.8, with other
# work running beside it; 13 CPU-minutes), of which 25 s downloading modules; it needs about
# 2.7 GiB of disk while it runs, and the cache keeps 85 MiB.
set -Eeuo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pinned() { sed -n "s/^$1=//p" "${here}/versions.env"; }
KUEUE_VERSION="${RESNET50_KUEUE_VERSION:-$(pinned KUEUE_VERSION)}"
# Bump when the recipe below changes in a way that needs a rebuild.
RECIPE=1
MODULE=sigs.k8s.io/kueue

KUEUE_DIR="${RESNET50_KUEUE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/resnet50-operator/kueue/${KUEUE_VERSION}}"
BIN="${KUEUE_DIR}/bin/kueue"
STAMP="${KUEUE_DIR}/.built"
WORK="${KUEUE_DIR}/build"
# What is copied out of the module's config/components/ (relative to it).
CONFIG_FILES=(crd/kustomization.yaml webhook/manifests.yaml rbac/role.yaml
  manager/controller_manager_config.yaml)

BUILD_NAME="kueue build"
# shellcheck source=hack/lib/cached-build.sh
source "${here}/../lib/cached-build.sh"
parse_build_args "$@"
[[ ${KUEUE_VERSION} =~ ^v0\.[0-9]+\.[0-9]+$ ]] \
  || die "the Kueue version must be a release such as v0.17.0, not '${KUEUE_VERSION}'"

cache_complete() {
  [[ -f "${STAMP}" ]] || return 1
  grep -qx "recipe=${RECIPE}" "${STAMP}" || return 1
  [[ -x "${BIN}" ]] || return 1
  compgen -G "${KUEUE_DIR}/config/crd/bases/*.yaml" >/dev/null || return 1
  local f
  for f in "${CONFIG_FILES[@]}"; do
    [[ -f "${KUEUE_DIR}/config/${f}" ]] || return 1
  done
}

build_once "${KUEUE_DIR}" cache_complete RESNET50_KUEUE_DIR

command -v go >/dev/null 2>&1 || die "go is not on PATH (Go >= 1.25 builds Kueue ${KUEUE_VERSION})"
started=$(date +%s)
log "building Kueue ${KUEUE_VERSION} into ${KUEUE_DIR}"

go_in_build_tree module
mkdir -p "${KUEUE_DIR}/bin"

# --- 1. The module's source: its go.mod, and the files we copy ---------------------------
cd "${WORK}/module"
go mod init resnet50-operator.local/kueue >/dev/null 2>&1
log "go mod download ${MODULE}@${KUEUE_VERSION}"
download=$(go mod download -json "${MODULE}@${KUEUE_VERSION}") \
  || die "the module proxy did not serve ${MODULE}@${KUEUE_VERSION}: ${download}"
field() { sed -n "s/^\t\"$1\": \"\(.*\)\",\{0,1\}$/\1/p" <<<"${download}"; }
kueue_mod=$(field GoMod)
src=$(field Dir)
[[ -f "${kueue_mod}" && -d "${src}" ]] || die "no go.mod or source for ${MODULE}@${KUEUE_VERSION} in: ${download}"
[[ -f "${src}/cmd/kueue/main.go" ]] || die "${MODULE}@${KUEUE_VERSION} has no cmd/kueue (the manager's main package)"
# A replace directive of Kueue's go.mod would not apply in our module: we would build
# with other dependencies than upstream does. There is none in v0.17.0; say so if a
# later release adds one.
if grep -Eq '^replace|^[[:space:]]*replace[[:space:]]*\(' "${kueue_mod}"; then
  die "${kueue_mod} has replace directives; copy them into ${WORK}/module/go.mod (go mod edit -replace) in this script"
fi
go_line=$(awk '$1 == "go" {print $2; exit}' "${kueue_mod}")
client_go=$(awk '$1 == "k8s.io/client-go" {print $2; exit}' "${kueue_mod}")
log "go ${go_line}; Kueue ${KUEUE_VERSION} is built with k8s.io/client-go ${client_go}"

# --- 2. The manager ----------------------------------------------------------------------
# Our module's main package is upstream's cmd/kueue/main.go with one change: with the
# internal certificate management off, upstream reads the metrics endpoint's certificate
# from the fixed path /etc/kueue/metrics/certs (a Secret's mount in its Deployment) and
# exits when it is not there. A process on a developer's machine cannot count on writing
# /etc, so our copy reads that directory from $KUEUE_METRICS_CERT_DIR, and falls back to
# upstream's path when it is unset. Everything else is upstream's code at that release.
go mod edit -go="${go_line}" -require="${MODULE}@${KUEUE_VERSION}"
upstream_path='metricsCertPath := "/etc/kueue/metrics/certs"'
[[ $(grep -cF "${upstream_path}" "${src}/cmd/kueue/main.go") -eq 1 ]] \
  || die "${src}/cmd/kueue/main.go no longer has the line '${upstream_path}': revisit the patch in $0"
sed "s|${upstream_path}|metricsCertPath := metricsCertDir()|" "${src}/cmd/kueue/main.go" >main.go
cat >metrics_cert_dir.go <<'GO'
package main

import "os"

// metricsCertDir is where the metrics endpoint's tls.crt and tls.key are: added by
// hack/kueue/build.sh, as upstream's path cannot be changed and needs /etc to be writable.
func metricsCertDir() string {
	if dir := os.Getenv("KUEUE_METRICS_CERT_DIR"); dir != "" {
		return dir
	}
	return "/etc/kueue/metrics/certs"
}
GO
log "go mod tidy (downloads the dependencies; log: ${WORK}/module/tidy.log)"
go mod tidy >tidy.log 2>&1 || { tail -30 tidy.log >&2; die "go mod tidy for ${MODULE}@${KUEUE_VERSION} failed"; }
selected=$(go list -m -f '{{.Version}}' k8s.io/client-go)
[[ "${selected}" == "${client_go}" ]] \
  || die "our module selected k8s.io/client-go ${selected}, Kueue's go.mod requires ${client_go}"

build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
version_pkg="${MODULE}/pkg/version"
ldflags="-s -w -X ${version_pkg}.GitVersion=${KUEUE_VERSION}"
ldflags+=" -X ${version_pkg}.GitCommit=module-proxy -X ${version_pkg}.BuildDate=${build_date}"
log "go build ${MODULE}/cmd/kueue (log: ${WORK}/module/build.log)"
go build -trimpath -ldflags "${ldflags}" -o "${BIN}.tmp" . >build.log 2>&1 \
  || { tail -40 build.log >&2; die "go build of Kueue ${KUEUE_VERSION} failed"; }
mv "${BIN}.tmp" "${BIN}"

# --- 3. The manifests the devcluster reads -----------------------------------------------
components="${src}/config/components"
rm -rf "${KUEUE_DIR}/config"
mkdir -p "${KUEUE_DIR}/config/crd"
cp -R "${components}/crd/bases" "${components}/crd/patches" "${KUEUE_DIR}/config/crd/"
for f in "${CONFIG_FILES[@]}"; do
  [[ -f "${components}/${f}" ]] || die "${MODULE}@${KUEUE_VERSION} has no config/components/${f}"
  mkdir -p "$(dirname "${KUEUE_DIR}/config/${f}")"
  cp "${components}/${f}" "${KUEUE_DIR}/config/${f}"
done
cp "${src}/LICENSE" "${KUEUE_DIR}/LICENSE"
chmod -R u+w "${KUEUE_DIR}/config" "${KUEUE_DIR}/LICENSE"  # the module cache's are read-only
crds=$(find "${KUEUE_DIR}/config/crd/bases" -name '*.yaml' | wc -l)
[[ ${crds} -gt 5 ]] || die "found only ${crds} CRDs in ${components}/crd/bases"
cd /

# --- 4. Check and stamp ------------------------------------------------------------------
# The manager has no --version flag; its --help proves the binary runs on this machine.
"${BIN}" --help >/dev/null 2>&1 || die "${BIN} --help failed"
grep -aq "${KUEUE_VERSION}" "${BIN}" || die "${BIN} does not carry its version ${KUEUE_VERSION}"

elapsed=$(( $(date +%s) - started ))
cat >"${STAMP}.tmp" <<EOF
recipe=${RECIPE}
kueue=${KUEUE_VERSION}
client-go=${client_go}
go=$(go version | awk '{print $3}')
crds=${crds}
built=${build_date}
build_seconds=${elapsed}
EOF
mv "${STAMP}.tmp" "${STAMP}"

if [[ "${RESNET50_KUEUE_KEEP_BUILD:-0}" != 1 ]]; then
  log "removing the build tree ($(du -sh "${WORK}" 2>/dev/null | cut -f1)); RESNET50_KUEUE_KEEP_BUILD=1 keeps it"
  chmod -R u+w "${WORK}" 2>/dev/null || true   # go's module cache files are read-only
  rm -rf "${WORK}"
fi
log "done in ${elapsed}s: $(du -sh "${KUEUE_DIR}" | cut -f1) in ${KUEUE_DIR}"
