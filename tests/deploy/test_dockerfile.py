"""Static checks of deploy/Dockerfile and deploy/docker-compose.yml (no Docker engine here)."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
COMPOSE = DEPLOY / "docker-compose.yml"
SECRET_NAME = re.compile(r"KEY|TOKEN|PASSWORD|SECRET|DATABASE_URL|REDIS_URL", re.I)


@dataclass
class Instruction:
    op: str
    args: str
    stage: int

    def exec_form(self) -> list[str]:
        value = json.loads(self.args)
        assert isinstance(value, list), f"{self.op} is not in exec (JSON) form"
        return [str(item) for item in value]


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    stage = -1
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if logical and line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        op, _, args = logical.partition(" ")
        op = op.upper()
        if op == "FROM":
            stage += 1
        instructions.append(Instruction(op, args.strip(), stage))
        logical = ""
    return instructions


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


def stage_of(instructions: list[Instruction], stage: int) -> list[Instruction]:
    return [i for i in instructions if i.stage == stage]


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    return stage_of(instructions, max(i.stage for i in instructions))


def copy_sources(instruction: Instruction) -> list[str]:
    words = [w for w in shlex.split(instruction.args) if not w.startswith("--")]
    return words[:-1]


# Dockerfile -------------------------------------------------------------------------------


def test_multi_stage_on_python_311_slim(instructions: list[Instruction]) -> None:
    froms = [i for i in instructions if i.op == "FROM"]
    assert len(froms) >= 2
    args = {
        name: value
        for i in instructions
        if i.op == "ARG" and i.stage == -1
        for name, _, value in [i.args.partition("=")]
    }
    for instruction in froms:
        image = instruction.args.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert image == "python:3.11-slim"
    assert "AS builder" in froms[0].args


def test_builder_installs_a_pinned_uv_and_syncs_frozen(instructions: list[Instruction]) -> None:
    builder = stage_of(instructions, 0)
    runs = [i.args for i in builder if i.op == "RUN"]
    arg_values = dict(i.args.partition("=")[::2] for i in builder if i.op == "ARG")
    assert re.fullmatch(r"\d+\.\d+\.\d+", arg_values["UV_VERSION"])
    assert any(re.search(r"pip install .*uv==", run) for run in runs)
    syncs = [i for i, run in enumerate(builder) if run.op == "RUN" and "uv sync" in run.args]
    first, second = (builder[i].args for i in syncs)
    assert "--frozen" in first and "--no-dev" in first and "--no-install-project" in first
    assert "--frozen" in second and "--no-dev" in second and "--no-install-project" not in second
    # Dependencies are installed before the source is copied (a cached layer).
    copy_proxy = next(
        i for i, ins in enumerate(builder) if ins.op == "COPY" and "proxy" in copy_sources(ins)
    )
    copy_lock = next(
        i for i, ins in enumerate(builder) if ins.op == "COPY" and "uv.lock" in copy_sources(ins)
    )
    assert copy_lock < syncs[0] < copy_proxy < syncs[1]


def test_copies_only_named_files_that_exist(instructions: list[Instruction]) -> None:
    copied: set[str] = set()
    for instruction in instructions:
        if instruction.op == "COPY" and "--from=" not in instruction.args:
            copied.update(copy_sources(instruction))
    assert "." not in copied and "./" not in copied, "copy files by name, not the context"
    assert copied >= {
        "pyproject.toml",
        "uv.lock",
        "README.md",
        "proxy",
        "alembic.ini",
        "migrations",
    }
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    assert not [i for i in instructions if i.op == "ADD"]


def test_dockerignore_keeps_what_the_image_needs() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert "**/.venv" in patterns and "**/.git" in patterns
    for needed in ["pyproject.toml", "uv.lock", "README.md", "alembic.ini", "migrations/env.py"]:
        for pattern in patterns:
            assert not fnmatch.fnmatch(needed, pattern.removeprefix("**/")), (needed, pattern)


def test_runtime_stage(instructions: list[Instruction]) -> None:
    runtime = final_stage(instructions)
    ops = {i.op for i in runtime}
    assert {"USER", "HEALTHCHECK", "ENTRYPOINT", "CMD", "EXPOSE", "WORKDIR"} <= ops

    (user,) = [i.args for i in runtime if i.op == "USER"]
    uid = user.split(":")[0]
    assert uid not in {"root", "0"}
    assert uid == "10001"
    assert any("--uid 10001" in i.args for i in runtime if i.op == "RUN")

    assert [i.args for i in runtime if i.op == "WORKDIR"] == ["/app"]
    assert [i.args for i in runtime if i.op == "EXPOSE"] == ["8000"]

    copies = [i for i in runtime if i.op == "COPY"]
    assert any("--from=builder" in i.args and "/app/.venv" in i.args for i in copies)
    runtime_sources = {s for i in copies if "--from" not in i.args for s in copy_sources(i)}
    assert {"alembic.ini", "migrations"} <= runtime_sources
    assert "proxy" not in runtime_sources, "the runtime gets the installed package only"

    env = " ".join(i.args for i in runtime if i.op == "ENV")
    assert "PATH=/app/.venv/bin:$PATH" in env
    assert "PYTHONUNBUFFERED=1" in env
    assert "PROXY_HOST=0.0.0.0" in env

    (entrypoint,) = [i for i in runtime if i.op == "ENTRYPOINT"]
    assert entrypoint.exec_form() == ["proxy"]
    (cmd,) = [i for i in runtime if i.op == "CMD"]
    assert cmd.exec_form() == ["serve", "--host", "0.0.0.0", "--port", "8000"]


def test_healthcheck_asks_healthz_with_the_standard_library(
    instructions: list[Instruction],
) -> None:
    (healthcheck,) = [i for i in final_stage(instructions) if i.op == "HEALTHCHECK"]
    options, _, command = healthcheck.args.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"]
    code = argv[2]
    assert "urllib" in code and "/healthz" in code
    compile(code, "<healthcheck>", "exec")
    assert "curl" not in healthcheck.args and "wget" not in healthcheck.args


def test_image_uid_matches_the_chart() -> None:
    values = yaml.safe_load((DEPLOY / "helm" / "voice-llm-proxy" / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == 10001
    assert values["securityContext"]["runAsUser"] == 10001


# docker compose ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


def test_compose_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"proxy", "redis", "postgres", "migrate"} <= set(services)
    assert services["redis"]["image"] == "redis:7"
    assert services["postgres"]["image"] == "postgres:15"
    for name in ("redis", "postgres"):
        assert services[name]["healthcheck"]["test"], name


def test_compose_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    proxy = services["proxy"]["depends_on"]
    assert proxy["migrate"]["condition"] == "service_completed_successfully"
    assert proxy["redis"]["condition"] == "service_healthy"
    assert proxy["postgres"]["condition"] == "service_healthy"
    migrate = services["migrate"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate["command"] == ["migrate"]  # after ENTRYPOINT ["proxy"]
    assert migrate["restart"] == "no"


def test_compose_proxy_and_migrate_share_the_image(compose: dict[str, Any]) -> None:
    proxy, migrate = compose["services"]["proxy"], compose["services"]["migrate"]
    assert proxy["image"] == migrate["image"]
    assert proxy["build"] == migrate["build"]
    assert proxy["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / proxy["build"]["context"]).resolve() == ROOT
    assert (
        proxy["environment"]["PROXY_DATABASE_URL"] == migrate["environment"]["PROXY_DATABASE_URL"]
    )


def test_compose_graceful_shutdown(compose: dict[str, Any]) -> None:
    proxy = compose["services"]["proxy"]
    command = proxy["command"]
    graceful = float(command[command.index("--graceful-timeout") + 1])
    grace = proxy["stop_grace_period"]
    assert grace.endswith("s")
    assert float(grace[:-1]) > graceful


def test_compose_has_no_inline_secrets(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        environment = service.get("environment") or {}
        assert isinstance(environment, dict), f"{name}: use the mapping form"
        for variable, value in environment.items():
            if SECRET_NAME.search(variable):
                assert re.search(r"\$\{\w+:\?[^}]+\}", str(value)), (
                    f"{name}.{variable} must come from deploy/.env as ${{VAR:?...}}"
                )


def test_env_example_and_readme_document_the_required_variables() -> None:
    text = COMPOSE.read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    assert {
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "PROXY_API_KEYS",
        "PROXY_ADMIN_TOKEN",
    } <= required
    example = (DEPLOY / ".env.example").read_text()
    defined = set(re.findall(r"^(\w+)=", example, re.M))
    assert required <= defined
    for line in example.splitlines():
        if re.match(r"^\w+=", line):
            assert line.split("=", 1)[1] == "", f".env.example must not carry values: {line}"
    readme = (DEPLOY / "README.md").read_text()
    for variable in required:
        assert f"`{variable}`" in readme, variable
    assert ".env" in (DEPLOY / ".gitignore").read_text().split()


def test_compose_config_file_is_valid(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from proxy.settings import Settings

    volumes = compose["services"]["proxy"]["volumes"]
    source, target, _ = next(v for v in volumes if v.endswith(":ro")).split(":")
    assert compose["services"]["proxy"]["environment"]["PROXY_CONFIG"] == target
    monkeypatch.setenv("PROXY_CONFIG", str((DEPLOY / source).resolve()))
    settings = Settings()
    assert settings.history.max_turns == 30
