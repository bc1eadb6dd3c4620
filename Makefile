# Quick start: `make demo` and `make test` each work from a clean clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-slow lint docs format bench clean

$(STAMP): pyproject.toml smallvision/version.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check smallvision tests benchmarks examples
	$(VENV)/bin/ruff format --check smallvision tests benchmarks examples
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format smallvision tests benchmarks examples
	$(VENV)/bin/ruff check --fix smallvision tests benchmarks examples

# The manual (docs/, mkdocs.yml) into site/; --strict turns a broken link or reference into an error.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict -q

# The manual is built by the suite (tests/test_docs.py: mkdocs build --strict, then its pages' commands are run).
test: lint
	$(PY) -m pytest -m "not slow" -q -n 2 --durations=15

test-slow: $(STAMP)
	$(PY) -m pytest -m slow -q --durations=15

bench: $(STAMP)
	$(PY) benchmarks/features.py

clean:
	rm -rf $(VENV) runs demo site .pytest_cache .ruff_cache
