# Two commands for a fresh machine: `make demo` and `make test`. Both create or reuse the virtual environment.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# Rebuilt only when what it installs changes; a second `make` reinstalls nothing.
STAMP := $(VENV)/.densevlm_d2-env

.PHONY: env test test-fast demo app lint clean-env wheelhouse wheelhouse-check gpu-check

env: $(STAMP)

$(STAMP): requirements.txt setup.py tools/install_extras.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) tools/install_extras.py
	$(PY) -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests -q $(PYTEST_ARGS)

# The developer's loop: everything but the tests marked slow (training runs, tools in subprocesses,
# full-size models); `make test` (CI) runs them all.
test-fast: $(STAMP)
	$(PY) -m pytest tests -q -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check densevlm_d2 tools tests datasets demo app setup.py
	$(VENV)/bin/ruff format --check densevlm_d2 tools tests datasets demo app setup.py

demo: $(STAMP)
	$(PY) -m demo $(DEMO_ARGS)

# The interactive app (docs/app.md) on http://127.0.0.1:7860: the demo's checkpoints once `make demo`
# has run, cached model-zoo entries, files of APP_ARGS="--models-dir DIR"
app: $(STAMP)
	$(PY) -m app $(APP_ARGS)

# For a GPU node without network (docs/gpu.md): wheels for the node's Python, e.g.
# `make wheelhouse PYTHON_VERSION=3.12` -> wheelhouse-cp312/
PYTHON_VERSION ?= 3.11
wheelhouse: $(STAMP)
	$(PY) tools/wheelhouse.py build --python-version $(PYTHON_VERSION) \
		--out wheelhouse-cp$(subst .,,$(PYTHON_VERSION))

# Build it for this machine, install it offline over a stock torch into a fresh prefix, run the tests
wheelhouse-check: $(STAMP)
	tools/check_wheelhouse.sh

# On the GPU node, with its own python (installs from wheelhouse-cpXY/ when needed)
gpu-check:
	tools/gpu_check.sh

clean-env:
	rm -rf $(VENV)
