# Two commands for a fresh clone: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test bench fixtures clean

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/gentwin demo

test: $(INSTALLED)
	$(BIN)/python -m pytest --durations=15

bench: $(INSTALLED)
	$(BIN)/python -m gentwin.bench

fixtures: $(INSTALLED)
	$(BIN)/python -m gentwin.fixtures.build

clean:
	rm -rf $(VENV) bench-models .pytest_cache .hypothesis
