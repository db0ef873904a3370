# Two entry points for a newcomer: `make demo` runs the main job, `make test` the checks.
# Each sets up .venv on first use and re-installs only when the project's metadata changes.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=25.1"
	$(PY) -m pip install --quiet --constraint constraints.txt --editable . --group dev
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sweeps run examples/digits.yaml --workers 2 --resume

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV)
