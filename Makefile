# neuron-operator developer entry points. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTEST_ARGS ?=
N ?= 100

# Everything Python runs from a project virtualenv, so a distribution's "externally managed" (PEP 668) python3
# works as well as a private one. PYTHON is only the interpreter the venv is made from: the first Python >= 3.10
# found, or the one you name (`make test PYTHON=/usr/bin/python3.11`, which rebuilds the venv from it).
VENV ?= .venv
PYTHON_CANDIDATES := python3.13 python3.12 python3.11 python3.10 python3
PYTHON ?= $(shell for p in $(PYTHON_CANDIDATES); do \
  $$p -c 'import sys; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1 && { command -v $$p; break; }; done)
VENV_BIN := $(abspath $(VENV))/bin
VENV_PYTHON := $(VENV_BIN)/python
# For scripts and tests that start Python or console scripts themselves (hack/*.sh read PYTHON).
VENV_ENV := PATH="$(VENV_BIN):$$PATH" PYTHON="$(VENV_PYTHON)"
# Set when PYTHON came from the command line or the environment: an existing venv made from another one is rebuilt.
PYTHON_PINNED := $(filter command line environment,$(origin PYTHON))

.PHONY: help venv install testenv cluster-up cluster-down cluster-status crds test test-unit test-e2e test-s3 demo demo-down bench bench-scale test-chaos

help:
	@echo "make demo            local simulated cluster + operator + examples/llama.yaml, Compiling -> Ready"
	@echo "make test            unit, S3, failure-suite and e2e tests on real local servers (builds them on first use)"
	@echo "make cluster-up      start the local control plane (kubeconfig: .testenv/kubeconfig)"
	@echo "make cluster-down    stop it (and a demo operator) and wipe its state"
	@echo "make cluster-status  processes, API health, simulated nodes"
	@echo "make crds            regenerate crds/, the chart's copy and docs/reference.md from the pydantic models"
	@echo "make bench           measure apply->children/Ready times, API writes per service, S3 fetch vs disk MB/s"
	@echo "make venv            create $(VENV) and install the project into it (done by every target that needs it)"
	@echo "make bench-scale N=100  N services in one apply vs. the same children without the operator (the floor)"
	@echo "make test-chaos      failure suite: operator SIGKILLs, API server restart, generated specs; prints figures"

# (Re)creates the venv when missing, broken or made from another pinned interpreter; reinstalls the project
# only when pyproject.toml is newer than the stamp.
venv:
	@set -e; want="$(PYTHON)"; \
	if [ -z "$$want" ]; then echo "make: no Python >= 3.10 found (tried $(PYTHON_CANDIDATES)); set PYTHON=/path/to/python3" >&2; exit 1; fi; \
	want=$$(command -v "$$want" || echo "$$want"); \
	case "$$want" in "$(VENV_BIN)"/*) echo "make: PYTHON=$$want is inside $(VENV); name the interpreter to build it from" >&2; exit 1;; esac; \
	if ! "$(VENV_PYTHON)" -c 'import sys; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1 \
	   || { [ -n "$(PYTHON_PINNED)" ] && [ "$$(cat "$(VENV)/.base-python" 2>/dev/null)" != "$$want" ]; }; then \
	  echo "make: creating $(VENV) from $$want ($$("$$want" -V 2>&1))"; \
	  rm -rf "$(VENV)"; \
	  "$$want" -m venv "$(VENV)" || { echo "make: '$$want -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }; \
	  echo "$$want" > "$(VENV)/.base-python"; \
	fi; \
	if [ ! -f "$(VENV)/.installed" ] || [ pyproject.toml -nt "$(VENV)/.installed" ]; then \
	  echo "make: installing -e '.[test]' into $(VENV)"; \
	  "$(VENV_PYTHON)" -m pip install --quiet --disable-pip-version-check -e '.[test]'; \
	  touch "$(VENV)/.installed"; \
	fi

install: venv

testenv:
	hack/testenv-build.sh >/dev/null

cluster-up: venv testenv
	$(VENV_ENV) hack/cluster.sh up

cluster-down:
	hack/cluster.sh down

cluster-status:
	hack/cluster.sh status

crds: venv
	$(VENV_BIN)/neuron-operator crds > crds/neuroninferenceservices.yaml
	cp crds/neuroninferenceservices.yaml charts/neuron-operator/crds/
	$(VENV_BIN)/neuron-operator reference > docs/reference.md

test: venv testenv
	$(VENV_ENV) $(VENV_PYTHON) -m pytest tests $(PYTEST_ARGS)

test-unit: venv
	$(VENV_ENV) $(VENV_PYTHON) -m pytest tests/unit $(PYTEST_ARGS)

test-e2e: venv testenv
	$(VENV_ENV) $(VENV_PYTHON) -m pytest tests/e2e $(PYTEST_ARGS)

test-s3: venv testenv
	$(VENV_ENV) $(VENV_PYTHON) -m pytest tests/s3 $(PYTEST_ARGS)

demo: venv testenv
	$(VENV_ENV) hack/demo.sh

bench: venv testenv
	$(VENV_ENV) $(VENV_PYTHON) -m tests.bench.bench_converge
	$(VENV_ENV) $(VENV_PYTHON) -m tests.bench.bench_s3

bench-scale: venv testenv
	$(VENV_ENV) $(VENV_PYTHON) -m tests.bench.bench_scale --services $(N)

test-chaos: venv testenv
	$(VENV_ENV) $(VENV_PYTHON) -m pytest tests/chaos $(PYTEST_ARGS)
