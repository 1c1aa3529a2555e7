# Two commands: `make demo` (the main job) and `make test` (the suite); `make docs` builds the
# API reference site into site/ (offline; any warning fails the build).
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

# The notebooks are committed without outputs: the build runs them on a tiny model.
docs: $(VENV)/.installed
	SKILL_LENS_NOTEBOOK_FAST=1 SKILL_LENS_QUIET=1 NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict
	$(PY) docs/check_site.py site

.PHONY: install demo test docs
