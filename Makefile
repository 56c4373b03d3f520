# Floodgate: `make up` runs the local cluster, `make test` runs the suite. Both create .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv up start down status test test-all lint check-dist check-alerts clean plan \
        bench-toolkit bench-queue bench-ingest bench-overload bench-gateway bench-retry bench-budget bench-scaleout bench-pushback bench-tenants

venv: $(STAMP)

# The toolkit is a distribution of its own (libs/floodgate/pyproject.toml) that the project depends on:
# both in one pip run, the toolkit from its folder.
$(STAMP): pyproject.toml libs/floodgate/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e './libs/floodgate[pg]' -e '.[dev]'
	@touch $(STAMP)

# ONLINE_REPLICAS=N, INGEST_API_REPLICAS=N, INGEST_WORKERS=N: how many processes of each service
# (short for FLOODGATE_ONLINE_REPLICAS... ; docs/cluster.md#settings).
REPLICAS_ENV := $(if $(ONLINE_REPLICAS),FLOODGATE_ONLINE_REPLICAS=$(ONLINE_REPLICAS)) \
                $(if $(INGEST_API_REPLICAS),FLOODGATE_INGEST_API_REPLICAS=$(INGEST_API_REPLICAS)) \
                $(if $(INGEST_WORKERS),FLOODGATE_INGEST_WORKERS=$(INGEST_WORKERS))

up: $(STAMP)  ## the whole local cluster in the foreground; Ctrl-C stops it (DETACH=1 to run in the background)
	$(REPLICAS_ENV) $(PY) -m cluster up $(if $(DETACH),--detach,)

start: $(STAMP)  ## the cluster in the background
	$(REPLICAS_ENV) $(PY) -m cluster up --detach

down: $(STAMP)
	$(PY) -m cluster down

status: $(STAMP)
	$(PY) -m cluster status

test: $(STAMP)  ## the default suite (fast; no running service needed)
	$(PY) -m pytest -m "not slow" $(ARGS)

test-all: $(STAMP)  ## including slow soak/load tests
	$(PY) -m pytest $(ARGS)

lint: $(STAMP)  ## fails on a lint error or an unformatted file
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

check-dist: $(STAMP)  ## the toolkit's wheel alone in a clean venv, smoke-tested under asyncio and trio
	$(PY) -m pytest tests/toolkit_dist -q $(ARGS)

# promtool comes with Debian's prometheus package (apt-get install --no-install-recommends prometheus) or a
# Prometheus release; the generated files are refreshed with `python -m cluster prometheus-config --out observability`.
check-alerts: $(STAMP)  ## promtool: the scrape configuration, the alerting rules and their unit tests, the dashboard's PromQL (observability/)
	@command -v promtool >/dev/null || { echo "promtool not found: apt-get install --no-install-recommends prometheus (Debian), or a Prometheus release" >&2; exit 1; }
	promtool check config observability/prometheus.yml
	promtool check rules observability/rules.yml
	promtool test rules observability/tests/*.yml
	@mkdir -p .data && $(PY) -m cluster.dashboard --rules > .data/dashboard-rules.yml
	promtool check rules .data/dashboard-rules.yml

plan: $(STAMP)  ## derived per-process limits and pool sizes from config/budget.toml
	$(VENV)/bin/floodgate plan

bench-toolkit: $(STAMP)  ## a guarded call vs the same call unguarded (no-op and loopback GET)
	$(PY) bench/bench_toolkit.py

bench-queue: $(STAMP)  ## the job queue vs pgqueuer and procrastinate: throughput and pickup latency
	$(PY) bench/bench_queue.py

bench-ingest: $(STAMP)  ## omniRAG ingest throughput vs what the embed budget allows
	$(PY) bench/bench_ingest.py

bench-overload: $(STAMP)  ## dealBrain under open-loop overload, gates on vs off (several minutes)
	$(PY) bench/bench_overload.py

bench-budget: $(STAMP)  ## floodgate plan's capacity vs the measured knee, and ingestion's isolation from dealBrain (~12 min)
	$(PY) bench/bench_budget.py

bench-tenants: $(STAMP)  ## the noisy neighbour: one tenant floods dealBrain, another's goodput and p99, token overshoot, provider 429s (~7 min)
	$(PY) bench/bench_tenants.py

bench-gateway: $(STAMP)  ## latency Envoy adds vs direct; rate-limit decisions/s vs grpcio
	$(PY) bench/bench_gateway.py

bench-scaleout: $(STAMP)  ## online processes join and die under load; the LLM's global limit holds (~1 min)
	$(PY) bench/bench_scaleout.py

bench-pushback: $(STAMP)  ## a provider limit below the budget: the learned limit's 429 share and throughput (~5 min)
	$(PY) bench/bench_pushback.py

bench-retry: $(STAMP)  ## floodgate's retry loop vs stamina and tenacity (installs the bench extra)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/bench_retry.py

clean:
	-@test -x $(PY) && $(PY) -m cluster down >/dev/null 2>&1 || true
	rm -rf $(VENV) .data .pytest_cache .ruff_cache .hypothesis
