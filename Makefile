.PHONY: install serve test test-fast lint format typecheck bench ci

install:
	uv sync

serve:
	uv run proxy serve

test:
	uv run pytest -q

# The unit tier: pure tests (no servers, subprocesses or network), under a minute.
test-fast:
	uv run pytest -q -m "not slow" tests/unit

lint:
	uv run ruff check proxy tests
	uv run ruff format --check proxy tests

format:
	uv run ruff format proxy tests
	uv run ruff check --fix proxy tests

typecheck:
	uv run mypy

bench:
	uv run proxy bench

ci:
	bash .ci/run
