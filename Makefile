# Two entry points for a newcomer: `make demo` runs the main job, `make test` the checks.
# Each sets up .venv on first use and re-installs only when the project's metadata changes;
# the demo needs only the project, the checks add the dev tools (test and check groups).
VENV      := .venv
PY        := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test check install browser clean

install: $(DEV_STAMP)

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=25.1"

$(RUN_STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet --constraint constraints.txt --editable .
	touch $@

$(DEV_STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet --constraint constraints.txt --editable . --group dev
	touch $@ $(RUN_STAMP)

demo: $(RUN_STAMP)
	$(VENV)/bin/sweeps run examples/digits.yaml --workers 2 --resume

# The dashboard tests drive Debian's chromium (never a browser download). Installed when we
# may (as root); otherwise those tests skip and say why.
browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The whole suite (CI runs it): two processes (pytest-xdist) for the 2-core machine, and the
# 30 slowest tests printed, so a test that grows shows up.
test: $(DEV_STAMP) browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -n 2 --durations=30

# The inner loop while working (under 3 minutes): the same checks, without the tests marked
# slow or e2e (those that drive the CLI in processes or train to the end).
check: $(DEV_STAMP) browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -n 2 -m "not slow and not e2e"

clean:
	rm -rf $(VENV)
