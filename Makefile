# Two commands: `make demo` (the main job) and `make test` (the suite).
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

.PHONY: install demo test
