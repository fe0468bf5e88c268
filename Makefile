# Two commands for a fresh machine with Python 3.10+ and make: `make demo` and `make test`.
# Each creates .venv and installs s3f-edge with what it needs before it runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEMO_DIR := demo-output

.PHONY: demo test bench install clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[cpu,dev]"
	touch $(INSTALLED)

install: $(INSTALLED)

# Check the FFT forms, then train -> evaluate on the 72 bundled brain MRI images.
# 36 training images and 8 epochs show the pipeline, not accuracy: expect chance-level scores.
demo: $(INSTALLED)
	rm -rf $(DEMO_DIR)
	$(BIN)/s3f-edge presets
	$(BIN)/s3f-edge fft-check samples/brain_mri --limit 2
	$(BIN)/s3f-edge train samples/brain_mri --image-size 64 --epochs 8 --lr 1e-3 --val-fraction 0.25 --out $(DEMO_DIR)/run
	$(BIN)/s3f-edge evaluate $(DEMO_DIR)/run/model.keras samples/brain_mri/test --out $(DEMO_DIR)/evaluate

test: $(INSTALLED)
	$(BIN)/python -m pytest

# Speed figures (not part of `make test`): the pytest-benchmark suite, then the README's ratios.
bench: $(INSTALLED)
	$(BIN)/python -m pytest benchmarks --benchmark-only --benchmark-columns=min,median,max,rounds -q
	$(BIN)/python benchmarks/ratios.py --out benchmarks/results

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
