# Two commands: `make demo` (the main job) and `make test` (the suite); `make docs` builds the
# docs site into site/ (offline; any warning fails the build). `make docs-real` and `make results`
# regenerate what the site shows from the real model (heavy: run them under the heavy lock on a shared machine).
# Each builds .venv from pinned versions (constraints.txt) the first time.
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/skill-lens demo

test: $(VENV)/.installed
	$(PY) -m pytest

# The notebooks are committed without outputs; the site shows each one's run on SmolLM2, kept in
# docs/executed/ and merged under the current cells (a notebook whose code changed since fails the build).
docs: $(VENV)/.installed
	SKILL_LENS_QUIET=1 NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict
	$(PY) docs/check_site.py site

# Execute the notebooks on SmolLM2 into docs/executed/ (about 1.5 h on 2 cores): NOTEBOOKS="01_quickstart" for some.
docs-real: $(VENV)/.installed
	$(PY) docs/execute_notebooks.py $(NOTEBOOKS)

# The results page: the demo's run (about 5 min), then docs/results.md and its figures.
results: $(VENV)/.installed
	$(VENV)/bin/skill-lens demo --out runs/demo
	$(PY) docs/results.py runs/demo

.PHONY: install demo test docs docs-real results
