# OctoLLM task runner. `make run` sets everything up and runs the main job; `make test` runs
# the whole suite (what CI runs). Every target works from a fresh clone.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
OCTO := $(VENV)/bin/octollm
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup run up down status test test-unit test-integration test-e2e lint typecheck bench reset clean

setup: ## venv, Python deps, Kafka jars (cached under ~/.cache/octollm and ~/.m2)
	@scripts/setup.sh

run: setup ## start Kafka, create topics, round-trip the example tasks
	$(OCTO) run

up: setup ## start the local services
	$(OCTO) infra up

down: ## stop the local services this checkout started
	$(OCTO) infra down

status:
	$(OCTO) infra status

test: setup ## the whole suite: unit, integration, e2e (starts the services it needs)
	$(PY) -m pytest tests

test-unit: setup
	$(PY) -m pytest tests/unit -m unit

test-integration: setup
	$(PY) -m pytest tests/integration -m integration

test-e2e: setup
	$(PY) -m pytest tests/e2e -m e2e

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	@scripts/typecheck.sh

bench: setup ## benchmarks print figures beside a same-run baseline; nothing is asserted
	$(PY) -m bench

reset: ## stop services and wipe local data (topics, logs, state) of this checkout
	$(OCTO) infra reset --yes

clean: down
	rm -rf .build .pytest_cache .mypy_cache .ruff_cache
