# attnzoo quick start: `make demo` trains and validates a small model on the embedded dataset, `make test` runs
# ruff and the whole test suite. Both create .venv on first use; the demo installs the package, the tests also the
# `det` and `onnx` extras and mmcv (built once by tools/install_mmcv.sh). Stamp files make later runs start at once.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BASE_STAMP := $(VENV)/.attnzoo-base-installed
STAMP := $(VENV)/.attnzoo-installed

# The demo: the smallest zoo backbone on the embedded digits dataset, about two minutes on 2 CPU cores.
DEMO_MODEL ?= nat_mini
DEMO_EPOCHS ?= 3
# One torch thread: on a shared 2-core machine OpenMP's spin-waiting makes 2 threads many times slower.
DEMO_THREADS ?= 1
DEMO_DIR := output/demo

# Tests: xdist workers, one torch thread each.
TEST_WORKERS ?= 2
PYTEST_ARGS ?=

# The README's attention-map figures (docs/figures/): one per family, random weights (the footprints are the point).
FIGURE_MODELS ?= nat_mini dinat_mini dinat_s_tiny maxvit_na_tiny_tf_224 biformer_tiny litv2_small agent_pvt_tiny \
	inline_pvt_tiny ravlt_tiny l2vit_tiny glnet_4g transnext_micro tiny_moat_0_no_pe

.PHONY: install demo test lint readme figures clean

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); echo "error: '$(PYTHON) -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"; exit 1; }

$(BASE_STAMP): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e .
	touch $@

$(STAMP): $(BASE_STAMP) tools/install_mmcv.sh
	$(PY) -m pip install -e '.[dev,det,onnx]'
	bash tools/install_mmcv.sh $(PY)
	touch $@

demo: $(BASE_STAMP)
	rm -rf $(DEMO_DIR)
	OMP_NUM_THREADS=$(DEMO_THREADS) $(PY) train.py --config configs/demo.yaml --model $(DEMO_MODEL) \
		--epochs $(DEMO_EPOCHS) --output output --experiment demo
	OMP_NUM_THREADS=$(DEMO_THREADS) $(PY) validate.py --model $(DEMO_MODEL) --workers 0 \
		--checkpoint $(DEMO_DIR)/model_best.pth.tar --results-file $(DEMO_DIR)/validate.csv

test: $(STAMP)
	$(PY) -m ruff check .
	OMP_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS); rc=$$?; \
		if [ $$rc -eq 5 ]; then echo 'pytest collected no tests'; exit 0; fi; exit $$rc

lint: $(STAMP)
	$(PY) -m ruff check .

readme: $(STAMP)
	$(PY) tools/gen_model_table.py

figures: $(STAMP)
	for m in $(FIGURE_MODELS); do OMP_NUM_THREADS=1 $(PY) visualize.py --model $$m --image chelsea \
		--points 150,120 330,90 --out docs/figures/$$m.jpg || exit 1; done

clean:
	rm -rf output build dist *.egg-info .pytest_cache .ruff_cache
