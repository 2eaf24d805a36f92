# tnconv: the two commands of the README, each doing its own set-up on a fresh machine.
#   make run    -- the main job: examples/resnet_cuts.py (quick profile without a GPU)
#   make test   -- the test suite
PYTHON ?= python3
ARGS ?=
export NUMBA_CACHE_DIR ?= $(HOME)/.cache/tnconv/numba
export PYTHONUNBUFFERED = 1

.PHONY: setup data test run bench lint

setup: data
	@$(PYTHON) -c "import torch, torchvision" 2>/dev/null || \
		$(PYTHON) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(PYTHON) -m pip install --quiet -e ".[dev,ray,bench,deploy]"

# Fashion-MNIST (offline) from Debian's dataset-fashion-mnist, when it is missing. An install
# failure is a warning locally and an error under CI=true (tests/conftest.py fails there too).
data:
	@if [ ! -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		($$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist) \
		|| if [ "$$CI" = true ]; then \
			echo "error: could not install dataset-fashion-mnist; CI=true needs the real data"; \
			exit 1; \
		else echo "warning: could not install dataset-fashion-mnist; real-data tests need it"; fi; \
	fi

test: setup
	$(PYTHON) -m pytest -q $(ARGS)

run: setup
	$(PYTHON) examples/resnet_cuts.py $(ARGS)

bench: setup
	$(PYTHON) benchmarks/bench_spectra.py

lint: setup
	$(PYTHON) -m ruff check tnconv tests examples benchmarks
