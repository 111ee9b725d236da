# The two commands of the README:  `make demo`  and  `make test`.
# Both create/reuse .venv and install the project (torch==2.14.1, torchvision==0.29.1) first.
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: setup demo test lint bench

setup:
	@bash scripts/setup_env.sh

demo: setup
	@$(PY) -m slotcon demo $(ARGS)

test: setup
	@bash scripts/ensure_browser.sh
	@$(PY) -m ruff check .
	@$(PY) -m ruff format --check .
	@$(PY) -m pytest -q $(ARGS)

lint: setup
	@$(PY) -m ruff check .
	@$(PY) -m ruff format --check .

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b; done
