"""Layers point one way: the leaf modules import nothing above them (read with ``ast``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "proxy"


def proxy_imports(path: Path) -> set[str]:
    """The ``proxy.*`` modules a source file imports, at any depth of the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            if node.module == "proxy":  # ``from proxy import settings`` names a module
                found.update(f"proxy.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            raise AssertionError(f"{path}: relative import; the package uses absolute ones")
    return {name for name in found if name == "proxy" or name.startswith("proxy.")}


def test_the_error_tree_imports_nothing_from_proxy() -> None:
    assert proxy_imports(PACKAGE / "errors.py") == set()


@pytest.mark.parametrize("leaf", ["call.py"])
def test_ids_and_call_context_sit_on_the_error_tree_only(leaf: str) -> None:
    assert proxy_imports(PACKAGE / leaf) <= {"proxy.errors"}


def test_settings_import_no_runtime_layer() -> None:
    # Settings are read by everything; they may use leaves and value types, never a layer
    # that itself reads settings (context, chat, api, upstream, ...).
    assert proxy_imports(PACKAGE / "settings.py") <= {
        "proxy.call",
        "proxy.config_file",
        "proxy.errors",
        "proxy.usage.specs",
    }


@pytest.mark.parametrize(
    "module", sorted((PACKAGE / "admin").glob("*.py")), ids=lambda path: path.name
)
def test_the_admin_service_imports_no_front_end(module: Path) -> None:
    # The HTTP API, the CLI and the console all use the admin service, never the reverse.
    front_ends = ("proxy.api", "proxy.cli", "proxy.cli_admin", "proxy.console")
    imported = proxy_imports(module)
    assert not {name for name in imported if name.startswith(front_ends)}


def serving_modules() -> list[Path]:
    dev = PACKAGE / "dev"
    return sorted(path for path in PACKAGE.rglob("*.py") if dev not in path.parents)


def test_the_serving_code_never_imports_the_dev_tooling() -> None:
    # The CLI names the dev tools by module string (imported only when one runs).
    modules = serving_modules()
    importers = {
        str(path.relative_to(PACKAGE)): sorted(
            name for name in proxy_imports(path) if name.split(".")[:2] == ["proxy", "dev"]
        )
        for path in modules
    }
    assert {path: names for path, names in importers.items() if names} == {}
    assert len(modules) > 100  # the walk found the package
