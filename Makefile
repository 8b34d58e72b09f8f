# CNN Classroom. Quick start: `make run` (set up, serve the app) and `make test` (set up, test).
# `make setup` is idempotent: it only redoes what changed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-stamp
PORT   ?= 8501
HOST   ?= localhost
# The class's limits and where its runs train (see the README's "A class on one machine").
RAY        ?= $(CNN_CLASSROOM_RAY)# HOST:PORT of a Ray head: the queue's jobs run there
MAX_QUEUED ?= $(or $(CNN_CLASSROOM_MAX_QUEUED),5)# runs a student may have waiting or running

.PHONY: setup system run test lint format lock bench clean

setup: system $(STAMP)

# Debian/Ubuntu as root: Fashion-MNIST and Chromium (browser tests) from apt, when missing.
system:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  missing=""; \
	  dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || missing="$$missing dataset-fashion-mnist"; \
	  command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then \
	    echo "apt-get install$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; } || \
	    echo "note: could not install$$missing; the app falls back to digits, browser tests skip"; \
	  fi; \
	fi

# Installs the pinned versions (requirements.lock), then this project itself as an editable
# package, so core, ui and gradio_app import from any folder with .venv/bin/python.
$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "CNN Classroom needs Python 3.11 or newer (found $$($(PYTHON) --version))"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	PYTHONWARNINGS=ignore::UserWarning $(BIN)/python -m pip install -q --no-deps -e .
	@# Off Debian (macOS): Playwright's own Chromium, if it can be downloaded; tests skip otherwise.
	@command -v chromium >/dev/null 2>&1 || $(BIN)/python -m playwright install chromium >/dev/null 2>&1 || true
	@# The fused CPU kernels, compiled once here (about 9 s) rather than at the first cnn_bn run.
	-@$(BIN)/python -c "import core.accel as a; a.warm()" 2>/dev/null
	touch $(STAMP)

run: setup
	CNN_CLASSROOM_RAY=$(RAY) CNN_CLASSROOM_MAX_QUEUED=$(MAX_QUEUED) \
	$(BIN)/streamlit run app.py --server.address $(HOST) --server.port $(PORT) \
	  --server.headless true --browser.gatherUsageStats false

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Re-pins requirements.lock from pyproject.toml (all extras, every platform, with hashes),
# keeping today's pins where they still fit; UPGRADE=1 moves every package to its newest release.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra ray --extra dev --universal --python-version 3.11 \
	  --generate-hashes --custom-compile-command "make lock" --quiet $(if $(UPGRADE),--upgrade) \
	  -o requirements.lock

bench: setup
	$(BIN)/python bench/speed.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
