# Two entry points (README quick start): `make run` and `make test`.
# Each creates .venv on first use; torch is installed first from its pinned
# CPU wheel so that pip never pulls the CUDA build.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run demo test lint bench

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e '.[viz,insights,examples,test,dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/python -m attribuo.insights.example

demo: $(STAMP)
	$(VENV)/bin/python -m attribuo.demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check attribuo tests benchmarks

bench: $(STAMP)
	$(VENV)/bin/python -m benchmarks.run
