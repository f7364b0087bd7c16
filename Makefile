# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Tests keep their own model store so they never touch ~/.levant.
TEST_HOME ?= $(CURDIR)/.levant-test

.PHONY: install run test test-fast lint typecheck bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

# int4 weights: the fastest CPU setting (LEVANT_DTYPE=float32 make run for full precision).
run: install
	LEVANT_DTYPE=$${LEVANT_DTYPE:-int4} $(BIN)/levant serve --pull

test: install
	LEVANT_HOME=$(TEST_HOME) $(BIN)/levant pull smollm2-135m-instruct
	LEVANT_TEST_HOME=$(TEST_HOME) $(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	LEVANT_TEST_HOME=$(TEST_HOME) $(BIN)/python -m pytest -m "not slow and not browser" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check levant tests bench
	$(BIN)/ruff format --check levant tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench.decode

clean:
	rm -rf $(VENV) $(TEST_HOME) .pytest_cache .mypy_cache .ruff_cache
