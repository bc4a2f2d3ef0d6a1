# `make demo` sets everything up on a fresh machine and runs a short CPU training (cpu-smoke);
# `make test` runs the tests (what CI runs, see .ci/run).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup control-plane demo test lint

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[trainer,operator,dev]'
	touch $@

setup: $(BIN)/.installed

# etcd, kube-apiserver, controller-manager and scheduler for the operator tests: built
# once from Debian's kubernetes source package into ~/.cache (about 11 minutes), then
# found there at once.
control-plane:
	bash hack/control-plane/build.sh

# A short ResNet50 training on the CPU with generated data.
demo: setup
	$(BIN)/resnet50-train --preset cpu-smoke --output-dir runs/cpu-smoke

test: setup control-plane
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check trainer operator tests benchmarks
