# Two set-up commands that work on a fresh machine:
#   make demo   installs into .venv and trains the default CORAL model on the embedded synthetic faces
#   make test   installs into .venv (with the dev extra) and runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/ordinalage train --head coral

test: install
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check ordinalage tests benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) runs studies .pytest_cache
