# Set-up and everyday commands. `make demo` and `make test` create .venv themselves.
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch trio must match exactly; the constraints file pins the tested set for this set-up.
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: setup demo test lint bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/fastast sweep

test: setup
	$(VENV)/bin/pytest

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
