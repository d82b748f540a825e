# OctoLLM task runner. `make run` sets everything up and runs the main job; `make test` runs
# the whole suite (what CI runs). Every target works from a fresh clone.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
OCTO := $(VENV)/bin/octollm
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Rust builds go to a cache outside the clone, so a fresh clone (and CI) reuses them.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/octollm/cargo-target
CARGO := cargo
REFLEX := --manifest-path reflex-layer/Cargo.toml

.PHONY: setup run up down status test test-unit test-integration test-e2e lint typecheck bench reset clean \
	train-injection eval-injection

setup: ## venv, Python deps, Kafka jars, the reflex binary (cached under ~/.cache/octollm, ~/.m2)
	@scripts/setup.sh

run: setup ## start the whole pipeline locally, send the example tasks, show results live (Ctrl-C stops)
	$(OCTO) run

up: setup ## start the local services
	$(OCTO) infra up

down: ## stop the local services this checkout started
	$(OCTO) infra down

status:
	$(OCTO) infra status

test: setup ## the whole suite: Rust crate tests, then unit, integration, e2e (starts the services it needs)
	$(CARGO) test --release --locked $(REFLEX)
	$(PY) -m pytest tests

test-unit: setup
	$(CARGO) test --release --locked $(REFLEX)
	$(PY) -m pytest tests/unit -m unit

test-integration: setup
	$(PY) -m pytest tests/integration -m integration

test-e2e: setup
	$(PY) -m pytest tests/e2e -m e2e

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(CARGO) fmt $(REFLEX) --check
	$(CARGO) clippy --release --locked $(REFLEX) -- -D warnings

typecheck: setup
	@scripts/typecheck.sh

bench: setup ## benchmarks print figures beside a same-run baseline; nothing is asserted
	$(PY) -m bench

# The learned prompt-injection stage (issue 11). Corpora: OCTO_INJECTION_DATA (default /work/data),
# fetched as reflex-layer/model/DATA_CARD.md says; the binary computes every feature.
train-injection: setup ## retrain reflex-layer/model/injection.v1.bin from the recorded sources
	$(PY) scripts/train_injection.py train

eval-injection: setup ## leave-one-source-out table, hard-benign false alarms, regression set
	$(PY) scripts/train_injection.py eval

reset: ## stop services and wipe local data (topics, logs, state) of this checkout
	$(OCTO) infra reset --yes

clean: down
	rm -rf .build .pytest_cache .mypy_cache .ruff_cache
