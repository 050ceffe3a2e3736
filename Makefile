# Two commands for a newcomer: `make demo` and `make test`. Both install what they need into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --disable-pip-version-check -c constraints.txt
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo

.PHONY: setup system-deps test lint demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -q --upgrade pip
	$(PIP) -q -e '.[train,dev]'
	touch $(STAMP)

system-deps:
	bash deploy/install-system-deps.sh

test: setup system-deps
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: setup
	bash deploy/demo.sh $(DEMO_DIR)

bench: setup
	$(BIN)/python -m edge_ad.benchmarks.training_throughput
	test -d $(DEMO_DIR)/bundle || $(MAKE) demo
	$(BIN)/python -m edge_ad.benchmarks.restoration --run $(DEMO_DIR)/run --data $(DEMO_DIR)/data
	$(BIN)/python -m edge_ad.benchmarks.restoration --run $(DEMO_DIR)/run --data $(DEMO_DIR)/data --quantile 0.95
	$(BIN)/python -m edge_ad.benchmarks.runtime_fps --bundle $(DEMO_DIR)/bundle --batch 1 8

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .ruff_cache
