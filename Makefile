# Two commands for a newcomer: `make demo` and `make test`. Both run `make setup` first when needed.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.setup-done
VCSIM := tests/lab/vcsim/vcsim-lab

PYTEST_ARGS ?=

.PHONY: setup test lint unit soak demo lab-up lab-down clean openzfs-lab

setup: $(SETUP_STAMP) $(VCSIM) openzfs-lab

$(SETUP_STAMP): pyproject.toml scripts/install-system-packages.sh
	bash scripts/install-system-packages.sh
	test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(VCSIM): $(wildcard tests/lab/vcsim/*.go) $(SETUP_STAMP)
	cd tests/lab/vcsim && GO111MODULE=off GOPATH=/usr/share/gocode go build -o vcsim-lab .

# Kernel OpenZFS for the lab VM (reconciler/lab/openzfs_vm.py): minutes once per machine, then a no-op.
openzfs-lab: $(SETUP_STAMP)
	bash scripts/build-openzfs-cache.sh

lint: setup
	$(VENV)/bin/ruff check .

unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test: setup lint
	$(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

# the crash soak at length: KILLS=300 make soak (replay a failure with RECONCILER_SOAK_SEED=<seed it printed>)
KILLS ?= 100
soak: setup
	$(PY) -m pytest tests/integration/test_crash_soak.py -s --soak $(KILLS) $(PYTEST_ARGS)

demo: setup
	bash scripts/demo.sh

lab-up: setup
	$(VENV)/bin/reconciler lab up

lab-down:
	-$(VENV)/bin/reconciler lab down

clean: lab-down
	rm -rf $(VENV) $(VCSIM) .lab
