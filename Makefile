# neuron-operator developer entry points. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
PYTEST_ARGS ?=
N ?= 100

.PHONY: help install testenv cluster-up cluster-down cluster-status crds test test-unit test-e2e demo demo-down bench bench-scale test-chaos

help:
	@echo "make demo            local simulated cluster + operator + examples/llama.yaml, Compiling -> Ready"
	@echo "make test            unit, failure-suite and e2e tests on the real local control plane (builds it on first use)"
	@echo "make cluster-up      start the local control plane (kubeconfig: .testenv/kubeconfig)"
	@echo "make cluster-down    stop it (and a demo operator) and wipe its state"
	@echo "make cluster-status  processes, API health, simulated nodes"
	@echo "make crds            regenerate crds/, the chart's copy and docs/reference.md from the pydantic models"
	@echo "make bench           measure apply->children/Ready times and API writes per service"
	@echo "make bench-scale N=100  N services in one apply vs. the same children without the operator (the floor)"
	@echo "make test-chaos      failure suite: operator SIGKILLs, API server restart, generated specs; prints figures"

install:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[test]'

testenv:
	hack/testenv-build.sh >/dev/null

cluster-up: install testenv
	PYTHON=$(PYTHON) hack/cluster.sh up

cluster-down:
	hack/cluster.sh down

cluster-status:
	hack/cluster.sh status

crds: install
	neuron-operator crds > crds/neuroninferenceservices.yaml
	cp crds/neuroninferenceservices.yaml charts/neuron-operator/crds/
	neuron-operator reference > docs/reference.md

test: install testenv
	$(PYTHON) -m pytest tests $(PYTEST_ARGS)

test-unit: install
	$(PYTHON) -m pytest tests/unit $(PYTEST_ARGS)

test-e2e: install testenv
	$(PYTHON) -m pytest tests/e2e $(PYTEST_ARGS)

demo: install testenv
	PYTHON=$(PYTHON) hack/demo.sh

bench: install testenv
	$(PYTHON) -m tests.bench.bench_converge

bench-scale: install testenv
	$(PYTHON) -m tests.bench.bench_scale --services $(N)

test-chaos: install testenv
	$(PYTHON) -m pytest tests/chaos $(PYTEST_ARGS)
