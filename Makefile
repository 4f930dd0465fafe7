# A facade: every target is one command; multi-line logic lives in scripts/.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
# uv from PATH, else the one pip installs as a module (setup installs it when neither exists).
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
export UV  # scripts/check-deploy.sh builds its tools' virtualenv with the same uv
VENV := .venv
RUN := $(VENV)/bin/python
SYNCED := $(VENV)/.synced
LOCKED_INPUTS := uv.lock pyproject.toml shared/pyproject.toml $(wildcard services/*/pyproject.toml)

.PHONY: help setup run test test-unit test-integration lint typecheck format clean bench bench-ingest bench-memory soak up down check-deploy check-rules loadtest loadtest-resilience drift-demo experiment-demo evaluate move-data

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-18s %s\n", $$1, $$2}'

$(SYNCED): $(LOCKED_INPUTS)
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --all-packages --frozen
	@touch $@

setup: $(SYNCED) ## Create .venv with every service and the dev tools (uv, from uv.lock)

run: setup ## Start the whole system with the MovieLens demo (DEMO=0: without; PORT=8000)
	$(RUN) scripts/run.py

# Two pytest-xdist workers: the modules marked BESIDE_THE_REST on one, the rest in order on
# the other (recsys_shared/testing/fixtures.py says which and why). A plain `pytest` runs it
# all in one.
BESIDE := -n 2 --dist loadgroup

test: setup lint typecheck ## Lint, type-check and run every test (unit and integration)
	$(RUN) -m pytest $(BESIDE)

test-unit: setup ## Only the fast tests beside each service
	$(RUN) -m pytest -m "not integration"

test-integration: setup ## Only the cross-service tests on real processes
	$(RUN) -m pytest -m integration $(BESIDE)

lint: setup ## ruff: lint and formatting
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# scripts/ and loadtests/ are folders of modules that import each other by name (each has a
# run.py): checked one folder at a time, each on its own search path.
typecheck: setup ## mypy --strict on the shared package, every service, the scripts and the load tests
	$(VENV)/bin/mypy shared/src services/gateway/src services/recommender/src services/feature-store/src services/retraining-worker/src
	MYPYPATH=scripts $(VENV)/bin/mypy scripts
	MYPYPATH=loadtests:scripts $(VENV)/bin/mypy loadtests

drift-demo: setup ## MovieLens replayed window by window: drift, retrain, gate, promotion, chart
	$(RUN) scripts/drift_demo.py

experiment-demo: setup ## Canaries on simulated users: a worse version rolled back, a better one promoted, chart
	$(RUN) scripts/experiment_demo.py

evaluate: setup ## Quality: MovieLens replayed through the public API, and every recipe offline
	$(RUN) scripts/evaluate.py --json reports/evaluate.json

bench: setup ## Serving figures (cache, uncached, p99, scoring, freshness, scale) vs baselines
	$(RUN) scripts/bench.py

bench-ingest: setup ## Events/s accepted and applied end to end, beside raw XADD (reports/)
	$(RUN) scripts/bench_ingest.py

bench-memory: setup ## Redis bytes per remembered event (limit 40), user, item, backlog entry, list
	$(RUN) scripts/bench_memory.py

soak: setup ## 10 min of steady traffic (SOAK_SECONDS): Redis memory must plateau (reports/)
	$(RUN) scripts/soak.py

loadtest: ## Locust, headless, against HOST (starts the system if needed); fails on SLO misses
	$(PYTHON) loadtests/run.py

loadtest-resilience: ## Model swap and a replica kill under load: zero 5xx, p99 spike reported
	$(PYTHON) loadtests/run.py --scenario resilience

# REDIS_CLUSTER=1 make up: the data on compose's Redis Cluster (profile cluster, 3 masters and
# 3 replicas) through deploy/compose/cluster.yml. `down` names both so it stops either system.
COMPOSE_CLUSTER := -f docker-compose.yml -f deploy/compose/cluster.yml --profile cluster
up: ## Build the images and start the system with Docker Compose (needs .env; REDIS_CLUSTER=1)
	@test -f .env || { echo "No .env: cp .env.example .env, then set its secrets"; exit 1; }
	docker compose $(if $(filter 1,$(REDIS_CLUSTER)),$(COMPOSE_CLUSTER)) build \
		--build-arg CODE_VERSION="$$(git describe --always --dirty 2>/dev/null)"
	docker compose $(if $(filter 1,$(REDIS_CLUSTER)),$(COMPOSE_CLUSTER)) up --detach --wait

down: ## Stop the Docker Compose system; its volumes (Redis, artifacts) are kept
	docker compose $(COMPOSE_CLUSTER) down

check-rules: ## promtool: check the Prometheus config and rules, run the alert unit tests
	scripts/check-rules.sh

check-deploy: ## Check the deployment files: kustomize, schemas, checkov, compose, yamllint
	scripts/check-deploy.sh

format: setup ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

move-data: setup ## Copy a stopped system's data tier into an empty Redis or cluster (MOVE_FROM_REDIS_URL, MOVE_TO_REDIS_URL, EVENT_PARTITIONS)
	$(RUN) -m recsys_shared.data_move

clean: ## Remove the virtualenv, local data and reports
	rm -rf $(VENV) .venv-deploy .venv-loadtest .venv-browser .data reports .pytest_cache .mypy_cache .ruff_cache
