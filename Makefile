# MPRD suite. `make help` lists the targets. Every target creates .venv and installs on first use.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

help: ## List targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-22s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install pinned requirements + the package (idempotent)

test: $(STAMP) ## Run the test suite (fast; `make test-all` includes slow tests)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP) ## Run every test, slow ones included
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

synthetic: $(STAMP) ## Generate the default synthetic dataset (data/synthetic-small-seed0)
	$(BIN)/python -m mprd.data.synthetic --root data --preset small --seed 0

smoke: $(STAMP) ## One short run: knn on the tiny synthetic set
	$(BIN)/python -m mprd.train method=knn dataset.synthetic.preset=tiny max_epochs=2 eval_every=1 logger.wandb.enabled=false

train: $(STAMP) ## Train one method: make train ARGS="method=ss"
	$(BIN)/python -m mprd.train $(ARGS)

.PHONY: help install test test-all synthetic smoke train
