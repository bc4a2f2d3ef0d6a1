#!/usr/bin/env bash
# Build a real Kubernetes control plane (etcd + kube-apiserver +
# kube-controller-manager + kube-scheduler, plus kubectl) for the tests, from
# Debian packages only: no Docker engine, no kind, no download outside Debian's
# archive.
#
#   hack/control-plane/build.sh            # build once, then exit at once
#   hack/control-plane/build.sh --force    # rebuild even if the cache is there
#
# Where it goes: $RESNET50_CONTROL_PLANE_DIR, by default
#   ${XDG_CACHE_HOME:-$HOME/.cache}/resnet50-operator/control-plane/v1.20.2
# with bin/{etcd,kube-apiserver,kube-controller-manager,kube-scheduler,kubectl}
# and a stamp file `.built`. Nothing is written inside the repository.
#
# How:
#  * Kubernetes v1.20.2 is Debian bookworm's source package `kubernetes`
#    (1.20.5+really1.20.2), which carries the whole upstream tree with vendor/.
#    It is fetched with `apt-get source` through a private, throw-away apt
#    configuration (a deb-src line for bookworm), so the machine's own apt
#    sources are left untouched.
#  * It is built with Debian's golang-1.19 in GOPATH mode by upstream's own
#    build scripts (hack/make-rules/build.sh sets GO111MODULE=off and lays the
#    tree out under _output/local/go/src/k8s.io/kubernetes), after
#    `make gen_openapi` (the generated OpenAPI definitions are not in the
#    tarball; without them kube-apiserver does not compile).
#  * The vendored github.com/modern-go/reflect2 1.0.1 crashes at run time with
#    Go >= 1.18; it is replaced by 1.0.2 from Debian's
#    golang-github-modern-go-reflect2-dev.
#  * etcd (3.4) and kubectl (1.20.2) are the binaries of Debian's etcd-server and
#    kubernetes-client packages, unpacked into the cache's bin/ with
#    `apt-get download` + `dpkg-deb -x` rather than installed: that starts no
#    etcd system service and does not clash with another package that already
#    owns /usr/bin/kubectl.
#
# A cold build takes about 11 minutes on 2 cores and needs about 3 GiB of disk
# while it runs; the source and build tree is deleted afterwards (unless
# RESNET50_CONTROL_PLANE_KEEP_BUILD=1), the cache keeps about 300 MiB of binaries.
set -Eeuo pipefail

K8S_VERSION=v1.20.2
DEBIAN_SRC_PACKAGE=kubernetes
DEBIAN_SUITE=bookworm
GO_PACKAGE=golang-1.19-go
GO_ROOT=/usr/lib/go-1.19
# Bump when the recipe below changes in a way that needs a rebuild.
RECIPE=1

CP_DIR="${RESNET50_CONTROL_PLANE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/resnet50-operator/control-plane/${K8S_VERSION}}"
BIN_DIR="${CP_DIR}/bin"
STAMP="${CP_DIR}/.built"
WORK="${CP_DIR}/build"
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl)

log() { printf '[control-plane build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  printf '\n[control-plane build] ERROR: %s\n' "$*" >&2
  if [[ -d "${WORK}" ]]; then
    printf '[control-plane build] the build tree is kept for inspection: %s\n' "${WORK}" >&2
  fi
  exit 1
}
trap 'die "command failed (exit $?) at ${BASH_SOURCE[0]}:${LINENO}: ${BASH_COMMAND}"' ERR

force=0
for arg in "$@"; do
  case "${arg}" in
    --force) force=1 ;;
    -h|--help) sed -n '2,/^set -E/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: ${arg} (usage: $0 [--force])" ;;
  esac
done

cache_complete() {
  [[ -f "${STAMP}" ]] || return 1
  grep -qx "recipe=${RECIPE}" "${STAMP}" || return 1
  local b
  for b in "${BINARIES[@]}"; do
    [[ -x "${BIN_DIR}/${b}" ]] || return 1
  done
}

if [[ ${force} -eq 0 ]] && cache_complete; then
  log "up to date: ${BIN_DIR} (stamp ${STAMP}); --force rebuilds"
  exit 0
fi

mkdir -p "${CP_DIR}" || die "cannot create ${CP_DIR} (set RESNET50_CONTROL_PLANE_DIR to a writable directory)"

# One build at a time per cache directory; a second caller waits, then finds the stamp.
exec 9>"${CP_DIR}/.lock"
if ! flock -n 9; then
  log "another build holds ${CP_DIR}/.lock; waiting for it"
  flock 9
fi
if [[ ${force} -eq 0 ]] && cache_complete; then
  log "up to date (built by the other run): ${BIN_DIR}"
  exit 0
fi

started=$(date +%s)
log "building Kubernetes ${K8S_VERSION} control plane into ${CP_DIR}"

# --- 1. Debian packages ------------------------------------------------------
if [[ $(id -u) -eq 0 ]]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  SUDO=(__no_root__)
fi

[[ -r /etc/debian_version ]] || die "this script needs a Debian (bookworm) machine with apt"

need_pkgs=()
for p in "${GO_PACKAGE}" rsync make dpkg-dev xz-utils openssl ca-certificates debian-archive-keyring; do
  dpkg-query -W -f='${Status}' "${p}" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("${p}")
done
if [[ ${#need_pkgs[@]} -gt 0 ]]; then
  [[ ${SUDO[0]-} != __no_root__ ]] || die "need root (or sudo) to apt-get install: ${need_pkgs[*]}"
  log "apt-get update"
  "${SUDO[@]}" apt-get update -q >/dev/null || die "apt-get update failed"
  log "apt-get install ${need_pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q --no-install-recommends \
    "${need_pkgs[@]}" >/dev/null || die "apt-get install ${need_pkgs[*]} failed"
fi
[[ -x "${GO_ROOT}/bin/go" ]] || die "${GO_ROOT}/bin/go not found after installing ${GO_PACKAGE}"

rm -rf "${WORK}"
mkdir -p "${WORK}"/{apt/lists/partial,apt/archives/partial,apt/sources.d,debs,src} "${BIN_DIR}"

# A private apt configuration: its own source list (deb + deb-src for bookworm
# main), index directory and caches, so nothing of the machine's apt state changes.
mirror="${RESNET50_DEBIAN_MIRROR:-}"
if [[ -z "${mirror}" ]]; then
  # shellcheck disable=SC2016 # $(...) are apt's format fields, not shell
  mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' 2>/dev/null \
    | awk -v s="${DEBIAN_SUITE}" '$2 == s && $1 !~ /security/ {print $1; exit}' || true)
fi
mirror="${mirror:-http://deb.debian.org/debian/}"
cat >"${WORK}/apt/sources.list" <<EOF
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror} ${DEBIAN_SUITE} main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror} ${DEBIAN_SUITE} main
EOF
APT_PRIVATE=(
  -o "Dir::Etc::SourceList=${WORK}/apt/sources.list"
  -o "Dir::Etc::SourceParts=${WORK}/apt/sources.d"
  -o "Dir::State::Lists=${WORK}/apt/lists"
  -o "Dir::Cache::Archives=${WORK}/apt/archives"
  -o "Dir::Cache::pkgcache="
  -o "Dir::Cache::srcpkgcache="
  -o "APT::Sandbox::User=root"
  -q
)
log "apt: indexes of ${mirror} ${DEBIAN_SUITE} (private apt state under ${WORK}/apt)"
apt-get "${APT_PRIVATE[@]}" update >"${WORK}/apt-update.log" 2>&1 \
  || { tail -20 "${WORK}/apt-update.log" >&2; die "apt-get update (private deb-src list for ${DEBIAN_SUITE}) failed"; }

# --- 2. etcd and kubectl: binaries from Debian's packages --------------------
log "apt-get download etcd-server kubernetes-client golang-github-modern-go-reflect2-dev"
(cd "${WORK}/debs" && apt-get "${APT_PRIVATE[@]}" download \
    etcd-server kubernetes-client golang-github-modern-go-reflect2-dev) >"${WORK}/apt-download.log" 2>&1 \
  || { tail -20 "${WORK}/apt-download.log" >&2; die "apt-get download of Debian packages failed"; }
for deb in "${WORK}"/debs/*.deb; do
  dpkg-deb -x "${deb}" "${WORK}/debs/root"
done
install -m 0755 "${WORK}/debs/root/usr/bin/etcd" "${BIN_DIR}/etcd"
install -m 0755 "${WORK}/debs/root/usr/bin/kubectl" "${BIN_DIR}/kubectl"
reflect2_src="${WORK}/debs/root/usr/share/gocode/src/github.com/modern-go/reflect2"
[[ -f "${reflect2_src}/reflect2.go" ]] || die "reflect2 source not found in golang-github-modern-go-reflect2-dev"
etcd_version=$("${BIN_DIR}/etcd" --version | awk '/^etcd Version/ {print $3}')
kubectl_version=$("${BIN_DIR}/kubectl" version --client --short 2>/dev/null | awk '{print $3}')
log "etcd ${etcd_version}, kubectl ${kubectl_version}"

# --- 3. Kubernetes source -------------------------------------------------------
log "apt-get source ${DEBIAN_SRC_PACKAGE} (${DEBIAN_SUITE})"
(cd "${WORK}/src" && apt-get "${APT_PRIVATE[@]}" source --download-only "${DEBIAN_SRC_PACKAGE}") \
  >"${WORK}/apt-source.log" 2>&1 \
  || { tail -20 "${WORK}/apt-source.log" >&2; die "apt-get source ${DEBIAN_SRC_PACKAGE} failed"; }
dsc=$(ls "${WORK}"/src/"${DEBIAN_SRC_PACKAGE}"_*.dsc)
src_version=$(sed -n 's/^Version: //p' "${dsc}")
KROOT="${WORK}/gopath/src/k8s.io/kubernetes"
mkdir -p "$(dirname "${KROOT}")"
log "unpacking ${DEBIAN_SRC_PACKAGE} ${src_version} into ${KROOT}"
dpkg-source --no-check -x "${dsc}" "${KROOT}" >"${WORK}/dpkg-source.log" 2>&1 \
  || { tail -20 "${WORK}/dpkg-source.log" >&2; die "dpkg-source -x failed"; }
rm -f "${WORK}"/src/*.tar.* "${WORK}"/debs/*.deb
grep -q "tag: ${K8S_VERSION}" "${KROOT}/hack/lib/version.sh" \
  || die "the source package is not Kubernetes ${K8S_VERSION} (hack/lib/version.sh says otherwise)"

log "replacing vendored github.com/modern-go/reflect2 1.0.1 by Debian's 1.0.2 (1.0.1 crashes on Go >= 1.18)"
rm -rf "${KROOT}/vendor/github.com/modern-go/reflect2"
cp -a "${reflect2_src}" "${KROOT}/vendor/github.com/modern-go/reflect2"

# --- 4. Build -------------------------------------------------------------------
export PATH="${GO_ROOT}/bin:${PATH}"
export GOFLAGS="" GO111MODULE=off GOPROXY=off GOTOOLCHAIN=local
export HOME="${WORK}/home"   # keep go's and the build's dot-files out of the real home
mkdir -p "${HOME}"
unset GOPATH GOROOT GOBIN
log "$(go version)"

cd "${KROOT}"
log "make gen_openapi (1-2 min)"
make gen_openapi >"${WORK}/gen_openapi.log" 2>&1 \
  || { tail -40 "${WORK}/gen_openapi.log" >&2; die "make gen_openapi failed (log: ${WORK}/gen_openapi.log)"; }

targets=(cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler)
log "hack/make-rules/build.sh ${targets[*]} (about 8 min on 2 cores; log: ${WORK}/build.log)"
KUBE_BUILD_PLATFORMS="linux/$(go env GOARCH)" KUBE_VERBOSE=2 \
  hack/make-rules/build.sh "${targets[@]}" >"${WORK}/build.log" 2>&1 \
  || { tail -60 "${WORK}/build.log" >&2; die "building ${targets[*]} failed (log: ${WORK}/build.log)"; }

for t in "${targets[@]}"; do
  b=$(basename "${t}")
  [[ -x "_output/bin/${b}" ]] || die "_output/bin/${b} missing after the build"
  install -m 0755 "_output/bin/${b}" "${BIN_DIR}/${b}"
done
cd /

# --- 5. Check and stamp ---------------------------------------------------------
for b in kube-apiserver kube-controller-manager kube-scheduler; do
  v=$("${BIN_DIR}/${b}" --version 2>&1) || die "${BIN_DIR}/${b} --version failed: ${v}"
  [[ "${v}" == "Kubernetes ${K8S_VERSION}" ]] || die "${b} reports '${v}', expected 'Kubernetes ${K8S_VERSION}'"
done

elapsed=$(( $(date +%s) - started ))
cat >"${STAMP}.tmp" <<EOF
recipe=${RECIPE}
kubernetes=${K8S_VERSION}
debian_source=${DEBIAN_SRC_PACKAGE} ${src_version}
go=$(go version | awk '{print $3}')
etcd=${etcd_version}
kubectl=${kubectl_version}
built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
build_seconds=${elapsed}
EOF
mv "${STAMP}.tmp" "${STAMP}"

if [[ "${RESNET50_CONTROL_PLANE_KEEP_BUILD:-0}" != 1 ]]; then
  log "removing the build tree ($(du -sh "${WORK}" 2>/dev/null | cut -f1)); RESNET50_CONTROL_PLANE_KEEP_BUILD=1 keeps it"
  chmod -R u+w "${WORK}" 2>/dev/null || true   # go's module/build cache files are read-only
  rm -rf "${WORK}"
fi
log "done in ${elapsed}s: $(du -sh "${BIN_DIR}" | cut -f1) in ${BIN_DIR}"
ls -l "${BIN_DIR}" >&2
