# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT := out
DEMO := examples/demo
TRACE := ../shared/traces/alibaba-gpu-v2023

.PHONY: demo test lint trace-replay clean

$(BIN)/corral: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/corral
	@mkdir -p $(OUT)
	$(BIN)/corral sim $(DEMO)/cluster.yaml $(DEMO)/workload.jsonl --failures $(DEMO)/failures.jsonl \
		--events $(OUT)/demo-events.jsonl --summary $(OUT)/demo-summary.json
	$(BIN)/corral check $(DEMO)/cluster.yaml $(DEMO)/workload.jsonl $(OUT)/demo-events.jsonl
	$(BIN)/python examples/jobs/demo.py

test: lint
	$(BIN)/python -m pytest

lint: $(BIN)/corral
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

trace-replay: $(BIN)/corral
	@mkdir -p $(OUT)/openb
	$(BIN)/corral trace import alibaba-openb $(TRACE) --out $(OUT)/openb
	$(BIN)/corral sim $(OUT)/openb/cluster.yaml $(OUT)/openb/workload.jsonl \
		--events $(OUT)/openb/events.jsonl --summary $(OUT)/openb/summary.json
	$(BIN)/corral check $(OUT)/openb/cluster.yaml $(OUT)/openb/workload.jsonl $(OUT)/openb/events.jsonl

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .hypothesis
