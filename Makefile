# Two commands on a fresh machine: `make train` and `make test`. Each creates .venv when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch/torchvision are pinned to the pair this project is tested with (Python 3.11, x86_64).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
# Extra Hydra overrides for `make train`, e.g. make train ARGS="strategy=finetune trainer.max_epochs=2"
ARGS ?=
# A local class-folder copy of CIFAR-10 is used when present (no download needed); otherwise
# torchvision downloads CIFAR-10 into data/.
CIFAR_LOCAL ?= ../shared/data/cifar10-jpeg
DATA_ARG := $(if $(wildcard $(CIFAR_LOCAL)/train),data.root=$(abspath $(CIFAR_LOCAL)),)

.PHONY: install train test test-all test-slurm test-mlflow lint format docs bench bench-transfer mutation gpu-check gpu-check-prepare tensorboard dashboard-shots clean

$(VENV)/.installed: pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

train: install
	$(PY) -m transfer_lightning $(DATA_ARG) $(ARGS)

# the suite without the tests marked slow (each slow one's behaviour has a fast test too); test-all runs them all.
# Most tests run the real CLI in a single-threaded subprocess, so two pytest workers (pytest-xdist) keep 2 cores busy.
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS)

# The tests marked `slurm` on a single-node SLURM cluster started here and stopped afterwards, even
# when a test fails (needs root and Debian's slurm-wlm + munge; see scripts/slurm-local.sh).
SLURM_LOCAL_DIR ?= $(or $(TMPDIR),/tmp)/transfer-lightning-slurm
test-slurm: install
	SLURM_LOCAL_DIR=$(SLURM_LOCAL_DIR) scripts/slurm-local.sh start
	SLURM_CONF=$(SLURM_LOCAL_DIR)/slurm.conf TL_SLURM_TESTS=1 $(PY) -m pytest -q -m slurm tests/test_slurm.py tests/test_slurm_ddp.py; \
	status=$$?; SLURM_LOCAL_DIR=$(SLURM_LOCAL_DIR) scripts/slurm-local.sh stop; exit $$status

# The tests marked `mlflow` against a local MLflow tracking server (SQLite, artifacts in a folder) started
# here on 127.0.0.1 and stopped afterwards, even when a test fails (scripts/mlflow-local.sh).
MLFLOW_LOCAL_DIR ?= $(or $(TMPDIR),/tmp)/transfer-lightning-mlflow
test-mlflow: install
	export MLFLOW_LOCAL_DIR=$(MLFLOW_LOCAL_DIR) PYTHON=$(PY); \
	server=$$(scripts/mlflow-local.sh start) || exit 1; eval "$$server"; \
	TL_MLFLOW_TESTS=1 $(PY) -m pytest -q -m mlflow tests/test_mlflow.py; \
	status=$$?; scripts/mlflow-local.sh stop; exit $$status

test-all: install
	$(PY) -m pytest -q -m "slow or not slow" -n $(TEST_WORKERS)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# The documentation site (mkdocs.yml, docs/) into site/; --strict: a broken link, a missing page or a
# docstring that does not parse fails. The configuration reference is generated from the config schemas.
docs: install
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

bench: install
	$(PY) benchmarks/bench.py

# The offline transfer benchmark (benchmarks/transfer.py): pretrained weights made from 5 CIFAR-10 classes, every
# strategy and recipe on the other 5 with 3 seeds, select over {random init, pretrained}; its table goes to
# BENCHMARKS.md. On 2 idle CPU cores: the source 16 min (once), the grid 28 min; a second run reuses what the first
# finished (outputs/bench-transfer).
bench-transfer: install
	$(PY) benchmarks/transfer.py --data $(CIFAR_LOCAL)

# mutmut on the core modules, each against its own fast tests (not in CI; docs/mutation.md has each module's time).
# One module: make mutation MODULES=transfer_lightning/cache/key.py. Results go to docs/mutation.md.
MODULES ?=
mutation: install
	$(PY) tools/mutation.py $(MODULES)

# On the lent GPU machine (device tool), carrying .whl and .gpudata: tests marked gpu + the speed table (CONTRIBUTING.md "GPU check")
gpu-check:
	bash benchmarks/gpu_check.sh

# Here, before a GPU session: the wheels the GPU machine lacks (.whl/) and a CIFAR-10 subset as one array (.gpudata/)
gpu-check-prepare: install
	$(PY) benchmarks/gpu_check.py --prepare --source $(CIFAR_LOCAL)

tensorboard: install
	$(PY) -m tensorboard.main --logdir outputs --bind_all

# screenshots of TensorBoard (Time Series, Images, HPARAMS) over a tiny run and sweep (needs chromium)
dashboard-shots: install
	$(PY) scripts/dashboard_shots.py

clean:
	rm -rf .pytest_cache .ruff_cache site
