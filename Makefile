# Arbiter: `make demo` runs the whole job on the bundled credit example;
# `make test` runs the whole suite. Both create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test test-fast demo models loadtest bench helm protos clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[all,test]"
	touch $(STAMP)

models: venv
	$(PY) examples/credit/train.py --out examples/credit/models --if-missing

test: venv
	bash .ci/install-helm.sh .cache/bin
	PATH="$(CURDIR)/.cache/bin:$$PATH" $(PY) -m pytest -q -p no:cacheprovider

test-fast: venv
	$(PY) -m pytest -q -m "not slow"

demo: models
	$(PY) -m examples.credit.demo --out out

loadtest: models
	$(PY) -m benchmarks.loadtest

bench: models
	$(PY) -m benchmarks.compare

protos: venv
	$(PY) -m protos.generate

clean:
	rm -rf $(VENV) .cache out
