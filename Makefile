.PHONY: install serve test test-fast lint format typecheck bench ci

install:
	uv sync

serve:
	uv run proxy serve

test:
	uv run pytest -q

# The unit tier: pure tests (no servers, subprocesses or network), under a minute.
# Two pytest plugins it does not use are skipped: they cost seconds of start-up.
test-fast:
	uv run pytest -q -m "not slow" -p no:langsmith_plugin -p no:schemathesis tests/unit

lint:
	uv run ruff check proxy tests
	uv run ruff format --check proxy tests

format:
	uv run ruff format proxy tests
	uv run ruff check --fix proxy tests

typecheck:
	uv run mypy
	uv run mypy --strict proxy/chat proxy/context proxy/upstream

bench:
	uv run proxy bench

ci:
	bash .ci/run
