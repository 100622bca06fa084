# Quick start:  make demo   (the main job on an embedded tiny model set, no downloads)
#               make test   (every test, including the ones inside a real ComfyUI server)
#               make bench  (every benchmark, one summary table; benchmarks/run_all.py --tiny: smoke run)
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test demo bench lint complexity

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
	$(PY) -m vulture

# Functions over 60 lines or cyclomatic complexity 15 (the style guide's marks), longest first.
complexity: setup
	git ls-files '*.py' | xargs $(PY) -m lizard -l python -L 60 -C 15 -w --sort nloc || true
