# The two commands of the README, each a complete set-up on a fresh clone (the first one builds .venv
# from the lock file):
#   make demo    bin/train on the built-in tiny default (a random GPT-J, synthetic facts)
#   make test    the test suite (then the mesh tests, on 8 fake CPU devices in a process of their own)
# Also: make test-reference (RLEDIT_REF_DIR=<checkout of zhrli324/RLEdit>), make lint, make lock;
# make test XLA_FLAGS=--xla_cpu_max_isa=AVX2 runs the suite as on a CPU without AVX-512 (BUILD.md).
PYTHON ?= python3
VENV ?= .venv
LOCK := requirements/lock-cpu.txt
STAMP := $(VENV)/.installed
RUN := $(VENV)/bin/python
# Test processes (pytest-xdist; each test file runs whole in one of them). About 3 GB of memory each.
TEST_WORKERS ?= 2
PYTEST := $(RUN) -m pytest -q -n $(TEST_WORKERS) --dist loadfile
# `make lock` re-resolves every pin; `make lock LOCK_UPGRADE=` only adds what pyproject.toml gained.
LOCK_UPGRADE ?= --upgrade
# Where `make lock` finds the CPU torch wheel pinned in requirements/torch-cpu.in (a local directory works).
TORCH_WHEELS ?= https://download.pytorch.org/whl/cpu/torch/

.PHONY: demo test test-reference lint format lock

demo: $(STAMP)
	$(RUN) bin/train --config=configs/tiny.py --workdir=runs/tiny

test: $(STAMP)
	$(PYTEST) -m "not mesh"
	XLA_FLAGS="$(XLA_FLAGS) --xla_force_host_platform_device_count=8" $(PYTEST) -m mesh

test-reference: $(STAMP)
	@test -n "$(RLEDIT_REF_DIR)" || { echo "set RLEDIT_REF_DIR to a checkout of zhrli324/RLEdit (BUILD.md)"; exit 2; }
	$(RUN) -m pytest -q -m reference

lint: $(STAMP)
	$(RUN) -m ruff check .
	$(RUN) -m ruff format --check .

format: $(STAMP)
	$(RUN) -m ruff format .
	$(RUN) -m ruff check --fix .

# Re-resolves the lock from pyproject.toml's ranges (needs uv; BUILD.md "Bumping the lock").
lock:
	uv pip compile pyproject.toml --extra test --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  --override requirements/torch-cpu.in --find-links $(TORCH_WHEELS) --no-emit-find-links \
	  --custom-compile-command "make lock" $(LOCK_UPGRADE) -o $(LOCK)

$(STAMP): $(LOCK) pyproject.toml
	PYTHON=$(PYTHON) bash tools/make_venv.sh $(VENV)
