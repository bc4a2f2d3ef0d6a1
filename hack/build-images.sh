#!/usr/bin/env bash
# Builds resnet50-operator/trainer:<version> and resnet50-operator/operator:<version> on a
# machine that reaches PyPI and a Debian mirror but no container registry.
#
#   sudo hack/build-images.sh                 # both images
#   sudo hack/build-images.sh operator        # only the operator image
#
# With normal registry access none of this is needed:
#   docker build --target trainer  -t resnet50-operator/trainer:0.1.0 .
#   docker build --target operator -t resnet50-operator/operator:0.1.0 .
#
# What it does, each step only when needed:
#   1. installs docker.io and debootstrap from the Debian archive (apt-get);
#   2. starts dockerd by hand (no bridge, no iptables) when no daemon answers, and stops
#      it again on exit; a daemon that was already running is left alone;
#   3. makes a Debian base image with python3, python3-venv and pip by debootstrap
#      (minbase), once: the root filesystem is kept as a tarball in the cache directory
#      below and imported into docker from there when docker lacks the image;
#   4. builds both Dockerfile targets FROM that image (--build-arg BASE_IMAGE) with
#      --network host, so RUN steps reach PyPI without a docker bridge.
#
# Environment:
#   DEBIAN_SUITE (bookworm), DEBIAN_MIRROR (http://deb.debian.org/debian)
#   BASE_IMAGE            use this image instead of making one (skips step 3)
#   DOCKER_STORAGE_DRIVER storage driver of a dockerd started here (overlay2; vfs is
#                         tried when overlay2 does not start)
#   DOCKER_BUILD_FLAGS    more `docker build` flags, e.g.
#                         "--build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu"
#   EXTRA_CA_CERTS_FILE   PEM file of CAs pip trusts while building; default: the CAs
#                         added on this machine, /usr/local/share/ca-certificates/*.crt
#   XDG_CACHE_HOME        the cache is ${XDG_CACHE_HOME:-$HOME/.cache}/resnet50-operator
#   LOAD_INTO_CONTAINERD  a containerd socket: also export the images into its k8s.io
#                         namespace (what hack/real-node.sh does), each labelled
#                         resnet50.dev/inputs=$IMAGE_INPUTS when that is set
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/pyproject.toml")
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/resnet50-operator
SUITE=${DEBIAN_SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
STORAGE_DRIVER=${DOCKER_STORAGE_DRIVER:-overlay2}
read -r -a BUILD_FLAGS <<< "${DOCKER_BUILD_FLAGS:-}"

if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=(operator trainer); fi
for target in "${TARGETS[@]}"; do
    case $target in
        operator|trainer) ;;
        *) echo "usage: $0 [operator] [trainer]" >&2; exit 2 ;;
    esac
done

log() { printf '==> %s\n' "$*"; }
die() { printf 'build-images: %s\n' "$*" >&2; exit 1; }
need_root() {
    [ "$(id -u)" -eq 0 ] || die "$1 needs root: run  sudo $0"
}

mkdir -p "$CACHE"

# --- 1. tools -----------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
    need_root "installing $*"
    if [ "$APT_UPDATED" -eq 0 ]; then
        apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# --- 2. a docker daemon -------------------------------------------------------------
DOCKERD_PID=""
stop_dockerd() {
    if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
        log "stopping the dockerd started here (pid $DOCKERD_PID)"
        kill "$DOCKERD_PID"
        for _ in $(seq 60); do
            kill -0 "$DOCKERD_PID" 2>/dev/null || break
            sleep 1
        done
    fi
    DOCKERD_PID=""
}
trap stop_dockerd EXIT

start_dockerd() {  # $1: storage driver; returns non-zero when the daemon does not answer
    log "starting dockerd (storage driver $1, no bridge, no iptables); log: $CACHE/dockerd.log"
    dockerd --bridge=none --iptables=false --ip6tables=false --storage-driver="$1" \
        >>"$CACHE/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 60); do
        if docker info >/dev/null 2>&1; then return 0; fi
        kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 1
    done
    tail -n 20 "$CACHE/dockerd.log" >&2
    stop_dockerd
    return 1
}

if docker info >/dev/null 2>&1; then
    log "using the running docker daemon"
else
    if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
        apt_install docker.io
    fi
    need_root "starting dockerd"
    if ! start_dockerd "$STORAGE_DRIVER"; then
        [ "$STORAGE_DRIVER" = vfs ] && die "dockerd did not start; see $CACHE/dockerd.log"
        log "dockerd did not start with $STORAGE_DRIVER; trying vfs (slower, uses more disk)"
        start_dockerd vfs || die "dockerd did not start; see $CACHE/dockerd.log"
    fi
fi

# --- 3. the base image --------------------------------------------------------------
if [ -z "${BASE_IMAGE:-}" ]; then
    BASE_IMAGE=resnet50-operator/debian-python:$SUITE
    BASE_TAR=$CACHE/debian-$SUITE-python.tar
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        log "base image $BASE_IMAGE: present"
    else
        if [ ! -s "$BASE_TAR" ]; then
            need_root "debootstrap"
            command -v debootstrap >/dev/null || apt_install debootstrap
            rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
            log "debootstrap $SUITE (minbase + python3, python3-venv, pip) from $MIRROR"
            debootstrap --variant=minbase \
                --include=python3,python3-venv,python3-pip,ca-certificates \
                "$SUITE" "$rootfs" "$MIRROR"
            chroot "$rootfs" apt-get clean
            rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
                "$rootfs"/var/log/*.log "$rootfs"/tmp/*
            tar -C "$rootfs" --numeric-owner -cf "$BASE_TAR.part" .
            mv "$BASE_TAR.part" "$BASE_TAR"
            rm -rf "$rootfs"
        fi
        log "importing $BASE_TAR as $BASE_IMAGE"
        docker import --change 'CMD ["/bin/bash"]' "$BASE_TAR" "$BASE_IMAGE" >/dev/null
    fi
fi

# --- 4. the images ------------------------------------------------------------------
# CAs added on this machine (Debian keeps them in /usr/local/share/ca-certificates) are
# trusted by pip in the Dockerfile's build stages, for a network whose TLS proxy has its
# own CA; the final images do not contain them.
if [ -n "${EXTRA_CA_CERTS_FILE:-}" ]; then
    ca_files=("$EXTRA_CA_CERTS_FILE")
else
    shopt -s nullglob
    ca_files=(/usr/local/share/ca-certificates/*.crt /usr/local/share/ca-certificates/*/*.crt)
    shopt -u nullglob
fi
if [ "${#ca_files[@]}" -gt 0 ]; then
    log "pip in the build stages also trusts ${ca_files[*]}"
    BUILD_FLAGS+=(--build-arg "EXTRA_CA_CERTS=$(cat "${ca_files[@]}")")
fi

# The stages whose layers are worth keeping as cache (the venvs: 6 GB of torch) are tagged
# like the images, and every build here is labelled: the build a tag named before becomes an
# untagged image and is pruned with its layers, so docker holds one build, not one per
# change of pyproject.toml. Untagged images not built here are left alone.
BUILT_BY=dev.resnet50-operator.built-by=build-images.sh
declare -A STAGES=([operator]="wheel operator-venv" [trainer]="wheel trainer-deps")
declare -A SECONDS_TAKEN
for target in "${TARGETS[@]}"; do
    tag=resnet50-operator/$target:$VERSION
    log "building $tag (target $target, FROM $BASE_IMAGE)"
    start=$SECONDS
    for stage in ${STAGES[$target]} "$target"; do
        stage_tag=resnet50-operator/stage:$stage
        [ "$stage" = "$target" ] && stage_tag=$tag
        docker build --network host --build-arg BASE_IMAGE="$BASE_IMAGE" "${BUILD_FLAGS[@]}" \
            --label "$BUILT_BY" --target "$stage" --tag "$stage_tag" "$ROOT"
    done
    SECONDS_TAKEN[$target]=$((SECONDS - start))
done
docker image prune --force --filter "label=$BUILT_BY" >/dev/null

# --- 5. into containerd ------------------------------------------------------------
if [ -n "${LOAD_INTO_CONTAINERD:-}" ]; then
    for target in "${TARGETS[@]}"; do
        tag=resnet50-operator/$target:$VERSION
        log "exporting $tag into containerd ($LOAD_INTO_CONTAINERD)"
        start=$SECONDS
        docker save "$tag" \
            | ctr --address "$LOAD_INTO_CONTAINERD" --namespace k8s.io images import - >/dev/null
        if [ -n "${IMAGE_INPUTS:-}" ]; then
            ctr --address "$LOAD_INTO_CONTAINERD" --namespace k8s.io images label \
                "docker.io/$tag" "resnet50.dev/inputs=$IMAGE_INPUTS" >/dev/null
        fi
        SECONDS_TAKEN[$target]=$((SECONDS_TAKEN[$target] + SECONDS - start))
    done
fi

log "built:"
for target in "${TARGETS[@]}"; do
    tag=resnet50-operator/$target:$VERSION
    size=$(docker image inspect --format '{{.Size}}' "$tag")
    printf '    %-40s %6d MB  %4d s\n' "$tag" "$((size / 1000000))" "${SECONDS_TAKEN[$target]}"
done
