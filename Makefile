# `make demo` sets everything up on a fresh machine and runs a CPU ResNet50Training through
# the operator on a local control plane with simulated nodes; `make test` runs the tests
# (what CI runs, see .ci/run).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup control-plane kueue gang-crds demo real-node-demo train-demo test lint

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[trainer,operator,dev]'
	touch $@

setup: $(BIN)/.installed

# etcd, kube-apiserver, controller-manager, scheduler and kubectl for the operator tests:
# built once from the Go module proxy into ~/.cache (about 15 minutes on 2 cores), then
# found there at once. The release: hack/control-plane/versions.env.
control-plane:
	bash hack/control-plane/build.sh

# Kueue's manager for the `kueue` test tier (tests/devcluster/test_kueue.py): built once from
# the Go module proxy into ~/.cache (about 9 minutes on 2 cores). The release:
# hack/kueue/versions.env.
kueue:
	bash hack/kueue/build.sh

# The PodGroup CRDs of Volcano and coscheduling, for server-side dry runs of PodGroups:
# fetched once from the Go module proxy into ~/.cache (about 2 minutes).
gang-crds:
	bash hack/gang-crds.sh

# The CPU smoke job (2 pods x 1 process) through the operator, on hack/local-cluster.sh.
demo: setup control-plane
	bash hack/local-cluster.sh demo manifests/examples/resnet50-cpu-smoke.yaml

# The same CPU smoke job on a real node (kubelet, containerd, CoreDNS, the operator in the
# cluster; hack/real-node.sh, needs root): builds CoreDNS and both images once.
real-node-demo: setup control-plane
	bash hack/real-node.sh demo manifests/examples/resnet50-cpu-smoke.yaml

# The same short training without Kubernetes: the trainer alone, with generated data.
train-demo: setup
	$(BIN)/resnet50-train --preset cpu-smoke --output-dir runs/cpu-smoke

test: setup control-plane kueue gang-crds
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check trainer operator tests benchmarks devcluster
	$(BIN)/ruff check hack/real-node/runc-oom-floor
	shellcheck -x --source-path=hack hack/*.sh hack/lib/*.sh hack/control-plane/*.sh hack/kueue/*.sh \
		benchmarks/*.sh
