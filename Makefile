# The front door: `make run` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck contracts dockerlint pytest bench chaos fmt install clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)  ## the service on SQLite with the TaskRouter simulator in-process
	$(BIN)/escalator demo

test: lint typecheck contracts dockerlint pytest  ## everything CI runs

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

contracts: $(STAMP)
	$(BIN)/lint-imports

dockerlint: $(STAMP)
	$(BIN)/hadolint Dockerfile

pytest: $(STAMP)
	@$(BIN)/pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; fi; \
	exit $$status

bench: $(STAMP)  ## benchmarks, 12-15 min (not part of test): bench/results/DATE-HOST.md and .json
	$(BIN)/python bench/run.py $(BENCH_ARGS)

chaos: $(STAMP)  ## the fault suite at full size (restarts PostgreSQL once); report under bench/results/
	@mkdir -p bench/results
	$(BIN)/python -m tests.chaos.run --database both --escalations 2000 --kills 20 --replicas 3 \
		--restart-postgres --out-dir bench/results

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache escalator.db escalator.db-wal escalator.db-shm
