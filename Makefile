# Two commands do all the set-up on a fresh machine:
#   make figures   create .venv if needed, install, regenerate the toy figures (CPU)
#   make test      same set-up, then lint (ruff) and the test suite (pytest)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install figures figures-quick test test-fast lint bench clean

install: $(STAMP)

# torch is installed first at the pinned CPU build: a bare `torch` requirement would pull a
# multi-GB CUDA build. On a GPU machine, change TORCH to the build you want.
TORCH ?= torch==2.13.0
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

figures: $(STAMP)
	$(PY) -m analysis.make_figures

figures-quick: $(STAMP)
	$(PY) -m analysis.make_figures --quick

lint: $(STAMP)
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

test: $(STAMP) lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

test-fast: $(STAMP) lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) -m bench.toy_speed

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
