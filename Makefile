# Quick start:  make demo   (the main job on an embedded tiny model set, no downloads)
#               make test   (every test, including the ones inside a real ComfyUI server)
#               make bench  (every benchmark, one summary table; benchmarks/run_all.py --tiny: smoke run)
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test demo bench lint

setup:
	bash scripts/setup.sh

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest

demo: setup
	$(PY) -m faithfulfaces_core.demo

bench: setup
	$(PY) benchmarks/run_all.py

lint: setup
	$(PY) -m ruff check .
