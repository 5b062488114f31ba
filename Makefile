# ssmc developer entry points. `make demo` and `make test` are all a newcomer needs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)
EXAMPLE := examples/digits/digits_s4d_step.onnx
OUT ?= build

.PHONY: setup demo test bench export-examples clean help

help:
	@echo "make demo   - set up the venv, compile the shipped example, run it"
	@echo "make test   - set up the venv, lint and format-check (ruff), check the layering (lint-imports) and run the test suite"
	@echo "make bench  - run the benchmarks (results in benchmarks/results/)"
	@echo "make export-examples - retrain and re-export the example models (separate torch venv)"

$(STAMP): pyproject.toml constraints.txt
	@PY310=$$(tools/find-python310) || exit 1; \
	if [ ! -x $(PY) ]; then echo "creating $(VENV) with $$PY310"; "$$PY310" -m venv $(VENV) || exit 1; fi
	$(PY) -m pip install --quiet --upgrade "pip>=23"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	@rm -f $(VENV)/.installed-*; touch $@

setup: $(STAMP)

demo: setup
	@mkdir -p $(OUT)
	$(VENV)/bin/ssmc inspect $(EXAMPLE)
	$(VENV)/bin/ssmc compile $(EXAMPLE) -o $(OUT)/net.lava --readout mean --calibrate examples/digits/digits_calib.npz
	$(VENV)/bin/ssmc report $(OUT)/net.lava
	$(VENV)/bin/ssmc run $(OUT)/net.lava --input examples/digits/digits_test.npz --compare-float
	$(VENV)/bin/ssmc run $(OUT)/net.lava --input examples/digits/digits_test.npz --engine float --compare-onnx $(EXAMPLE)
	$(VENV)/bin/ssmc run $(OUT)/net.lava --input examples/digits/digits_test.npz --engine lava --limit 8 --compare-numpy

test: setup
	$(VENV)/bin/ruff check ssmc tests benchmarks examples tools
	$(VENV)/bin/ruff format --check ssmc tests benchmarks examples tools
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest tests

bench: setup
	$(PY) benchmarks/engine_speed.py
	$(PY) benchmarks/lava_step.py
	$(PY) benchmarks/bitwidth_ablation.py
	$(PY) benchmarks/activation_ablation.py
	$(PY) benchmarks/sigma_delta.py
	$(PY) benchmarks/partition_quality.py --scale
	$(PY) benchmarks/compile_time.py --large
	$(PY) benchmarks/intel_compiler_logs.py
	$(PY) benchmarks/real_tasks.py --diagnose --diagnose-limit 250 --jobs 2

export-examples:
	bash examples/digits/export.sh
	bash examples/real_tasks/export.sh

clean:
	rm -rf $(OUT) .pytest_cache
