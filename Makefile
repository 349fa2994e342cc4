# `make demo` trains on the built-in shapes data and scores 500 held-out scenes; `make test` runs ruff, mypy and pytest
# (everything, as CI does); `make test-fast` leaves out the end-to-end trainings marked slow (under 2 minutes).
# Each creates the virtual environment .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH := torch==2.14.1 torchvision==0.29.1
CODE := captioner benchmarks experiments scripts tests

.PHONY: demo test test-fast lint

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(PY) -m captioner demo --config configs/shapes.yaml

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check $(CODE)
	$(VENV)/bin/ruff format --check $(CODE)
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest -q tests

test-fast: lint
	$(VENV)/bin/pytest -q -m "not slow" tests
