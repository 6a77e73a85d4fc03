# The two commands: `make run` and `make test`. Both install what is missing first.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint

$(STAMP): pyproject.toml constraints.txt scripts/install-system-deps.sh scripts/build-kube-apiserver.sh
	bash scripts/install-system-deps.sh
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	bash scripts/build-kube-apiserver.sh >/dev/null
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python -m gitops_pipeline.devstack

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

.PHONY: bench

bench: install
	$(BIN)/python -m bench
