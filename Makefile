# Every target does its own set-up: a fresh machine needs only python3 (>= 3.10) and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow test-torch-floor lint format bench gpu-check gpu-check-dry gpu-data clean

DEMO_RUN := runs/demo-$(shell date +%Y%m%d-%H%M%S)

# The main job on data that ships with Python: a character-level RHN trained for about two
# minutes on 2 CPU cores, then a sample of its text. Logs: tensorboard --logdir runs
demo: $(STAMP)
	$(BIN)/rhn-train configs/demo.yaml --run-dir $(DEMO_RUN) --fresh
	@echo "--- a sample from $(DEMO_RUN) ---"
	$(BIN)/rhn-sample $(DEMO_RUN) --prompt "The " --length 400 --temperature 0.7
	@echo "--- TensorBoard: $(BIN)/tensorboard --logdir runs ---"

# The fast suite (< 15 minutes on 2 CPU cores): lint, then every test not marked slow.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

# The fast suite on the oldest torch pyproject.toml admits (torch>=2.4), in its own venv:
# PyPI's torch 2.4.1 is a CUDA build, about 5 GB with its nvidia packages and triton 3.0
# (whose interpreter can't run the Triton tests on CPU: they skip, saying so).
FLOOR_VENV := .venv-torch-floor
test-torch-floor:
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/pip install --quiet --upgrade pip 'setuptools>=77'
	$(FLOOR_VENV)/bin/pip install --quiet torch==2.4.1
	echo torch==2.4.1 > $(FLOOR_VENV)/constraints.txt
	$(FLOOR_VENV)/bin/pip install --quiet -c $(FLOOR_VENV)/constraints.txt -e '.[dev]'
	$(FLOOR_VENV)/bin/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python scripts/bench_rnn.py

# GPU readiness in one command, on a GPU machine with its own python (torch and triton
# there; nothing installed from here): kernels, CUDA graphs, benchmarks, short training runs.
# Report: $(OUT)/report.md (on the device tool: make gpu-check PYTHON=python3 OUT=$$OUT, so
# that it comes back). Real PTB and MNIST come from gpu-data/ (make gpu-data).
GPU_DATA := $(wildcard gpu-data)
OUT ?= runs/gpu-check
gpu-check:
	PYTHONUNBUFFERED=1 $(PYTHON) scripts/gpu_check.py --out $(OUT) $(if $(GPU_DATA),--data-dir gpu-data)

# The same check on CPU at toy sizes (part of make test, through tests/test_gpu_check.py).
gpu-check-dry: $(STAMP)
	$(BIN)/python scripts/gpu_check.py --dry-run --out runs/gpu-check-dry

# PTB and MNIST copied into the git-ignored gpu-data/, which a GPU run carries along.
gpu-data:
	mkdir -p gpu-data && cp -r $${RHN_DATA_DIR:-../shared/data}/ptb $${RHN_DATA_DIR:-../shared/data}/mnist gpu-data/

# torch goes in first, pinned by constraints.txt, so nothing can pull a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt torch
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) $(FLOOR_VENV) .pytest_cache .ruff_cache *.egg-info
