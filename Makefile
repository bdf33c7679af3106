# tfcp: `make test` and `make demo` work on a fresh machine (they create .venv and install).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED ?= 0

.PHONY: install test lint demo self-training-demo lvis-mosaic-demo cp2-demo bench bench-peers clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps --target $(VENV)/lvis_ref lvis==0.5.3
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check tfcp tests benchmarks export
	$(PY) -m ruff format --check tfcp tests benchmarks export

# Two pytest workers (pytest-xdist), one test file at a time each (module and class fixtures
# are built once). On 2 cores: pytest 19-20 min for ~37 min of summed test time, peak memory
# of the machine ~11.6 GB (the gin-config builds ~6 GB of it). TEST_WORKERS=0: serial.
TEST_WORKERS ?= 2
test: lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

demo: $(STAMP)
	bash scripts/demo.sh $(DEMO_DIR)

self-training-demo: $(STAMP)
	bash scripts/self_training_demo.sh self_training_out

lvis-mosaic-demo: $(STAMP)
	bash scripts/lvis_mosaic_demo.sh lvis_mosaic_out

cp2-demo: $(STAMP)
	bash scripts/cp2_demo.sh cp2_out

bench: $(STAMP)
	$(PY) benchmarks/copy_paste_op.py
	$(PY) benchmarks/input_pipeline.py
	$(PY) benchmarks/export_latency.py
	$(PY) benchmarks/resume_latency.py
	$(PY) benchmarks/data_service.py

# tfcp's Copy-Paste op vs MMDetection 3.3's CopyPaste (own venv, built once); never in `make test`.
bench-peers: $(STAMP)
	PYTHON=$(PYTHON) bash benchmarks/peers/setup_mmdet.sh
	$(PY) benchmarks/peer_copy_paste.py $(BENCH_PEERS_FLAGS)

clean:
	rm -rf $(VENV) $(DEMO_DIR) *.egg-info
