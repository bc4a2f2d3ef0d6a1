# shellcheck shell=bash disable=SC2154  # ${WORK} and ${BUILD_NAME} are the sourcing script's
# What the one-time builds into ~/.cache share (hack/control-plane/build.sh,
# hack/kueue/build.sh, hack/gang-crds.sh): their messages, errors that keep the build tree
# for inspection, --force and --help, one build at a time per cache directory, and Go's
# caches inside the build tree. Sourced, not run; the script sets BUILD_NAME and WORK.

log() { printf '[%s %s] %s\n' "${BUILD_NAME}" "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  printf '\n[%s] ERROR: %s\n' "${BUILD_NAME}" "$*" >&2
  if [[ -d "${WORK}" ]]; then
    printf '[%s] the build tree is kept for inspection: %s\n' "${BUILD_NAME}" "${WORK}" >&2
  fi
  exit 1
}
trap 'die "command failed (exit $?) at ${BASH_SOURCE[0]}:${LINENO}: ${BASH_COMMAND}"' ERR

# parse_build_args "$@": force=1 with --force; --help prints the script's header comment.
parse_build_args() {
  force=0
  local arg
  for arg in "$@"; do
    case "${arg}" in
      --force) force=1 ;;
      -h|--help) sed -n '2,/^set -E/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
      *) die "unknown argument: ${arg} (usage: $0 [--force])" ;;
    esac
  done
}

# build_once DIR COMPLETE VARIABLE: exit at once when the function COMPLETE finds the
# cache in DIR complete (without --force); else create DIR (VARIABLE: the environment
# variable that moves it) and hold DIR/.lock for the rest of the script: a second caller
# waits, then finds the first one's result.
build_once() {
  local dir=$1 complete=$2 variable=$3
  if [[ ${force} -eq 0 ]] && "${complete}"; then
    log "up to date: ${dir}; --force builds again"
    exit 0
  fi
  mkdir -p "${dir}" || die "cannot create ${dir} (set ${variable} to a writable directory)"
  exec 9>"${dir}/.lock"
  if ! flock -n 9; then
    log "another build holds ${dir}/.lock; waiting for it"
    flock 9
  fi
  if [[ ${force} -eq 0 ]] && "${complete}"; then
    log "up to date (built by the other run): ${dir}"
    exit 0
  fi
}

# go_in_build_tree SUBDIR...: a fresh ${WORK} with SUBDIRs, and Go's module and build
# caches and dot-files in it: nothing lands in the user's home, and all goes with ${WORK}.
go_in_build_tree() {
  command -v go >/dev/null 2>&1 || die "go is not on PATH"
  if [[ -d "${WORK}" ]]; then chmod -R u+w "${WORK}"; rm -rf "${WORK}"; fi
  local sub
  for sub in home "$@"; do mkdir -p "${WORK}/${sub}"; done
  export HOME="${WORK}/home" GOPATH="${WORK}/gopath" GOMODCACHE="${WORK}/gopath/pkg/mod" \
    GOCACHE="${WORK}/go-build" GOFLAGS="-mod=mod" CGO_ENABLED=0
  export GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}"
  unset GOBIN
  log "$(go version) (GOTOOLCHAIN=${GOTOOLCHAIN:-default}), GOPROXY=${GOPROXY}"
}
