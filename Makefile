# `make demo` trains on the built-in shapes data and scores 500 held-out scenes; `make test` runs ruff + pytest.
# Each creates the virtual environment .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test lint bench clean-runs

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(PY) -m captioner demo --config configs/shapes.yaml

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check captioner tests scripts
	$(VENV)/bin/ruff format --check captioner tests scripts

test: lint
	$(VENV)/bin/pytest -q tests
