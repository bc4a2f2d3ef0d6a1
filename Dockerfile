# Two images from one Dockerfile:
#
#   docker build --target trainer  -t resnet50-operator/trainer:0.1.0 .
#   docker build --target operator -t resnet50-operator/operator:0.1.0 .
#
# trainer:  the `trainer` extra (torch, torchvision, pillow, numpy) and `resnet50-train`
#           on PATH; the operator's pods run it with command ["resnet50-train"] as uid 1000.
# operator: the `operator` extra only (kopf, kubernetes, pydantic, jinja2, pyyaml), no
#           torch; runs `resnet50-operator` as uid 1000, liveness on :8080/healthz.
#
# Base image. The default, python:3.11-slim-bookworm, serves both GPU and CPU nodes: the
# CUDA build of torch on PyPI carries the CUDA user-space libraries (cuDNN, cuBLAS, NCCL,
# ...) as nvidia-* wheels, so the image needs no CUDA base; the GPU driver comes from the
# host (NVIDIA Container Toolkit: the device plugin / GPU Operator on Kubernetes, or
# `docker run --gpus all`). A CUDA base such as nvidia/cuda would only add a second copy
# of CUDA. The same image runs on CPU-only nodes (kind): torch's CUDA build works without
# a GPU, and PyPI's torchvision needs that build, so torch comes from PyPI as it is.
#
# BASE_IMAGE may be any Debian or Ubuntu image: one without python3/venv gets them from
# apt, one that already has a uid 1000 user (ubuntu:24.04) has it replaced.
# hack/build-images.sh builds on a machine without registry access with a debootstrap-made
# Debian bookworm image as BASE_IMAGE.
#
# TORCH_INDEX_URL (trainer only, optional): an extra package index for torch and
# torchvision, e.g. https://download.pytorch.org/whl/cpu for a much smaller CPU-only
# trainer (torch 2.14.1+cpu with its matching torchvision). Empty (the default): PyPI.
#
# Stages are in dependency order, operator before trainer: the classic builder (no
# BuildKit) builds every stage up to the target, so `--target operator` never downloads
# torch this way.

ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------
# base: python3 with venv, the non-root user; shared by every stage.
FROM ${BASE_IMAGE} AS base
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN set -eux; \
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then \
        apt-get update; \
        apt-get install -y --no-install-recommends python3 python3-venv; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    if getent passwd 1000 >/dev/null; then \
        userdel --remove "$(getent passwd 1000 | cut -d: -f1)" 2>/dev/null || true; \
    fi; \
    if getent group 1000 >/dev/null; then groupdel "$(getent group 1000 | cut -d: -f1)"; fi; \
    groupadd --gid 1000 resnet50; \
    useradd --uid 1000 --gid 1000 --create-home --home-dir /home/resnet50 \
        --shell /bin/sh resnet50

# ---------------------------------------------------------------------------------------
# build-base: base for the stages that run pip. EXTRA_CA_CERTS (PEM text, optional) is
# trusted by pip on top of the base's CA bundle, for networks whose TLS proxy has its own
# CA; it stays in these stages: the final images only copy /opt/venv from them.
FROM base AS build-base
ARG EXTRA_CA_CERTS=""
RUN set -eu; \
    if [ -n "$EXTRA_CA_CERTS" ]; then \
        cat /etc/ssl/certs/ca-certificates.crt > /etc/pip-ca.pem 2>/dev/null || true; \
        printf '%s\n' "$EXTRA_CA_CERTS" >> /etc/pip-ca.pem; \
        printf '[global]\ncert = /etc/pip-ca.pem\n' > /etc/pip.conf; \
    fi

# ---------------------------------------------------------------------------------------
# wheel: the project's one wheel (both packages; the extras choose the dependencies).
FROM build-base AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY trainer ./trainer
COPY operator ./operator
RUN set -eux; \
    python3 -m venv /tmp/build; \
    /tmp/build/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .; \
    ls -l /wheels

# ---------------------------------------------------------------------------------------
# operator: /opt/venv with the `operator` extra, copied into a clean base. pip and
# setuptools leave the venv once it is complete: the operator needs neither at run time.
# Every module of resnet50_operator is imported once here: of resnet50_trainer the operator
# uses only the stdlib-only contract module, and an import that pulled in torch would fail
# this build instead of the running operator.
FROM build-base AS operator-venv
COPY --from=wheel /wheels /wheels
RUN set -eux; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install --no-cache-dir "$(ls /wheels/*.whl)[operator]"; \
    if /opt/venv/bin/python -c 'import torch' 2>/dev/null; then \
        echo 'the operator image must not contain torch' >&2; exit 1; \
    fi; \
    /opt/venv/bin/pip check; \
    /opt/venv/bin/pip uninstall --yes --quiet pip setuptools; \
    /opt/venv/bin/python -c 'import importlib, pkgutil, resnet50_operator as p; \
        [importlib.import_module(m.name) for m in pkgutil.walk_packages(p.__path__, p.__name__ + ".")]'

FROM base AS operator
COPY --from=operator-venv /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
LABEL org.opencontainers.image.title="resnet50-operator" \
      org.opencontainers.image.description="kopf operator for ResNet50Training resources" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
USER 1000:1000
WORKDIR /home/resnet50
EXPOSE 8080
CMD ["resnet50-operator"]

# ---------------------------------------------------------------------------------------
# trainer-deps: /opt/venv with the dependencies of the `trainer` extra (torch and
# torchvision pinned in pyproject.toml), installed through an empty stub of the packages.
# This stage depends on pyproject.toml alone, so a change of the sources leaves its
# multi-GB layer cached: only the small layer of the wheel below is rebuilt, pushed or
# loaded again.
FROM build-base AS trainer-deps
ARG TORCH_INDEX_URL=""
COPY pyproject.toml /tmp/stub/
RUN set -eux; \
    cd /tmp/stub; \
    touch README.md; \
    for pkg in trainer/resnet50_trainer operator/resnet50_operator; do \
        mkdir -p "$pkg"; touch "$pkg/__init__.py"; \
    done; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install --no-cache-dir \
        ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} ".[trainer]"; \
    /opt/venv/bin/pip uninstall --yes --quiet resnet50-operator; \
    cd /; rm -rf /tmp/stub; \
    /opt/venv/bin/python -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'

# trainer: the dependencies' layer, then the project's wheel (no network needed).
FROM base AS trainer
COPY --from=trainer-deps /opt/venv /opt/venv
COPY --from=wheel /wheels /tmp/wheels
RUN set -eux; \
    /opt/venv/bin/pip install --no-cache-dir --no-deps /tmp/wheels/*.whl; \
    rm -rf /tmp/wheels; \
    /opt/venv/bin/pip check
# Used by the NVIDIA Container Toolkit when the container gets GPUs; which GPUs it gets
# (NVIDIA_VISIBLE_DEVICES) is left to the device plugin or `docker run --gpus`.
ENV PATH=/opt/venv/bin:$PATH \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
LABEL org.opencontainers.image.title="resnet50-trainer" \
      org.opencontainers.image.description="PyTorch DDP ResNet50 trainer (resnet50-train)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
USER 1000:1000
WORKDIR /home/resnet50
# 29500: DDP rendezvous (master pod); 9402: the trainer's progress endpoint.
EXPOSE 29500 9402
# The operator's pods set command: ["resnet50-train"] and pass the options as args.
CMD ["resnet50-train", "--help"]
