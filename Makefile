# Two commands a user needs: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first, pinned to the CPU build this project is developed against; override for your hardware,
# e.g. `make test TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu126"`.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.coinfer-installed
# `make demo` runs the whole pipeline (issue 7); DEMO_ARGS= gives the one-edge walking skeleton,
# DEMO_ARGS="--full --fresh" retrains everything.
DEMO_ARGS ?= --full

.PHONY: demo test bench protos venv clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/coinfer demo $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/coinfer bench $(BENCH_ARGS)

protos: $(STAMP)
	$(PY) -m coinfer.protos.generate

clean:
	rm -rf $(VENV) build *.egg-info
