# Two commands for a fresh machine with Python 3.10+ and make: `make demo` and `make test`.
# Each creates .venv and installs s3f-edge with what it needs before it runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEMO_DIR := demo-output
# The folder holding the example datasets (brain_tumor_mri/, busi/) for `make bench`: DATA=... or $S3F_EDGE_DATA
# (what s3f_edge.testing and the scripts read). There is no default location: `make bench` stops without one.
DATA ?= $(S3F_EDGE_DATA)

.PHONY: demo test bench bench-data install browser dicom-tools clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[train,cpu,dicom,dev,cluster]"
	touch $(INSTALLED)

install: $(INSTALLED)

# The bundled default model on the sample test images, and refusing three ultrasound images it was never
# trained on, with a page to review both (demo-output/review.html) and one of its evaluation; then the whole
# pipeline on the 72 sample brain MRI images: train -> evaluate -> export (verified) -> infer (with Grad-CAM
# and its review page) -> latency. 36 training images and 8 epochs show the pipeline, not accuracy: expect
# chance-level scores from that tiny model.
demo: $(INSTALLED)
	rm -rf $(DEMO_DIR)
	$(BIN)/s3f-edge infer samples/brain_mri/test --recursive --out $(DEMO_DIR)/default-model.csv --quiet
	cut -d, -f1,2,4 $(DEMO_DIR)/default-model.csv
	$(BIN)/s3f-edge infer samples/ultrasound/images --out $(DEMO_DIR)/ultrasound.csv --quiet
	cut -d, -f1,2,3 $(DEMO_DIR)/ultrasound.csv
	$(BIN)/s3f-edge report $(DEMO_DIR)/default-model.csv $(DEMO_DIR)/ultrasound.csv --out $(DEMO_DIR)/review.html --quiet
	$(BIN)/s3f-edge evaluate s3f_edge/assets/default_model/model.onnx samples/brain_mri/test --out $(DEMO_DIR)/default-model-evaluate \
		--ood samples/ultrasound/images --report $(DEMO_DIR)/evaluation.html --quiet
	$(BIN)/s3f-edge presets --no-count-params
	$(BIN)/s3f-edge fft-check samples/brain_mri --limit 2
	$(BIN)/s3f-edge train samples/brain_mri --image-size 64 --epochs 8 --lr 1e-3 --val-fraction 0.25 --out $(DEMO_DIR)/run
	$(BIN)/s3f-edge evaluate $(DEMO_DIR)/run/model.keras samples/brain_mri/test --out $(DEMO_DIR)/evaluate
	$(BIN)/s3f-edge export $(DEMO_DIR)/run/model.keras --out $(DEMO_DIR)/export --precision fp16 --data samples/brain_mri
	$(BIN)/s3f-edge export $(DEMO_DIR)/run/model.keras --out $(DEMO_DIR)/export-dft --fft dft
	$(BIN)/s3f-edge infer samples/brain_mri/test --recursive --model $(DEMO_DIR)/export/model.onnx --out $(DEMO_DIR)/results.csv --quiet
	$(BIN)/s3f-edge infer samples/brain_mri/test --recursive --model $(DEMO_DIR)/run/model.keras --out $(DEMO_DIR)/explained.csv \
		--explain $(DEMO_DIR)/gradcam --report $(DEMO_DIR)/explained-review.html --quiet
	$(BIN)/s3f-edge bench $(DEMO_DIR)/run/model.keras $(DEMO_DIR)/export/model.onnx $(DEMO_DIR)/export-dft/model.onnx \
		--batch-sizes 1,16 --duration 2 --warmup 0.5 --json $(DEMO_DIR)/bench.json --plot $(DEMO_DIR)/bench.png

# Debian packages that tests drive for real, installed when missing (as root, or with sudo):
# $(call debian,COMMAND,PACKAGES,SKIP_VARIABLE,WHAT[,FILE]) does nothing when COMMAND exists (also in /usr/sbin,
# outside a user's PATH) and FILE, if given, too (a plugin, which no command shows), or when SKIP_VARIABLE is set.
define debian
	@if PATH="$$PATH:/usr/sbin" command -v $(1) >/dev/null$(if $(5), && test -e $(5)); then :; \
	elif [ -n "$($(3))" ]; then echo "$(3) is set: the $(4) tests will skip"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q $(2) >/dev/null \
		|| { apt-get update -q >/dev/null && apt-get install -y -q $(2) >/dev/null; }; \
	elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then \
		sudo apt-get install -y -q $(2) >/dev/null; \
	else echo "the $(4) tests need the Debian packages $(2): install them, or set $(3)=1"; exit 1; fi
endef

# The review pages' tests open them in Debian's Chromium and chromedriver; S3F_EDGE_SKIP_BROWSER=1 skips them.
browser:
	$(call debian,chromedriver,chromium chromium-driver,S3F_EDGE_SKIP_BROWSER,browser)
	$(call debian,chromium,chromium chromium-driver,S3F_EDGE_SKIP_BROWSER,browser)

# The DICOM tests judge every Structured Report with DCMTK's dsrdump and dicom3tools' dciodvfy, and the DICOM
# node's tests send reports to a real PACS: Orthanc with its DICOMweb plugin (started by the tests on free loopback
# ports, never as the system service), and its TLS test makes a certificate with openssl; S3F_EDGE_SKIP_DICOM_TOOLS=1
# skips them.
dicom-tools:
	$(call debian,dsrdump,dcmtk,S3F_EDGE_SKIP_DICOM_TOOLS,DICOM)
	$(call debian,dciodvfy,dicom3tools,S3F_EDGE_SKIP_DICOM_TOOLS,DICOM)
	$(call debian,Orthanc,orthanc orthanc-dicomweb,S3F_EDGE_SKIP_DICOM_TOOLS,DICOM,/usr/share/orthanc/plugins/libOrthancDicomWeb.so)
	$(call debian,openssl,openssl,S3F_EDGE_SKIP_DICOM_TOOLS,DICOM)

test: $(INSTALLED) browser dicom-tools
	$(BIN)/ruff check .
	S3F_EDGE_REQUIRE_BROWSER=$(if $(S3F_EDGE_SKIP_BROWSER),,1) S3F_EDGE_REQUIRE_DCMTK=$(if $(S3F_EDGE_SKIP_DICOM_TOOLS),,1) \
		S3F_EDGE_REQUIRE_DICOM3TOOLS=$(if $(S3F_EDGE_SKIP_DICOM_TOOLS),,1) S3F_EDGE_REQUIRE_ORTHANC=$(if $(S3F_EDGE_SKIP_DICOM_TOOLS),,1) \
		S3F_EDGE_REQUIRE_RAY=1 $(BIN)/python -m pytest

# Speed figures (not part of `make test`): the pytest-benchmark suite, then every script whose tables the
# README and docs/reproduction.md show, then those tables copied into the documents. About 1.5 hours.
bench: export S3F_EDGE_DATA := $(DATA)
bench: bench-data $(INSTALLED) browser
	$(BIN)/python -m pytest benchmarks --benchmark-only --benchmark-columns=min,median,max,rounds -q
	$(BIN)/python benchmarks/ratios.py --out benchmarks/results
	$(BIN)/python benchmarks/accuracy_speed.py --out benchmarks/results
	$(BIN)/python benchmarks/int8_variants.py --out benchmarks/results
	$(BIN)/python benchmarks/int8_spread.py --out benchmarks/results
	$(BIN)/python benchmarks/ort_session_options.py --out benchmarks/results
	$(BIN)/python benchmarks/runtime_footprint.py --out benchmarks/results
	$(BIN)/python benchmarks/training_speed.py --out benchmarks/results
	$(BIN)/python benchmarks/training_speed.py --data $(DATA)/busi --preset busi --size 128 --images 128 --no-xla --out benchmarks/results
	$(BIN)/python benchmarks/review_page.py --out benchmarks/results
	$(BIN)/python benchmarks/cluster_infer.py --out benchmarks/results
	$(BIN)/python benchmarks/dicom_reports.py --out benchmarks/results
	$(BIN)/python benchmarks/dicom_node.py --out benchmarks/results
	$(BIN)/python tools/update_docs.py

bench-data:
	@test -n "$(DATA)" || { echo "make bench: set S3F_EDGE_DATA or give DATA=... (the folder holding brain_tumor_mri/ and busi/)" >&2; exit 1; }
	@test -d "$(DATA)/brain_tumor_mri" -a -d "$(DATA)/busi" || { echo "make bench: $(DATA) holds no brain_tumor_mri/ and busi/ (S3F_EDGE_DATA or DATA=...)" >&2; exit 1; }

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
