"""The toolkit stands alone: it imports nothing of this repository's service, and this
repository's suites use it only through its public API (sqlite_faults.PUBLIC_MODULES and
the package's own exports), as a stranger would."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import sqlite_faults

ROOT = Path(__file__).resolve().parents[2]
TOOLKIT = ROOT / "toolkit" / "src" / "sqlite_faults"
SERVICE_PACKAGES = {"app", "examples", "report", "benchmarks", "tests"}


def imports(path: Path) -> list[tuple[str, list[str]]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def test_the_toolkit_imports_nothing_of_the_service() -> None:
    offending = [f"{path.relative_to(ROOT)}: {module}"
                 for path in TOOLKIT.rglob("*.py") for module, _ in imports(path)
                 if module.split(".")[0] in SERVICE_PACKAGES]
    assert not offending


def test_this_repository_uses_only_the_public_api() -> None:
    users = [p for folder in ("tests", "report", "benchmarks", "examples",
                              "scripts")
             for p in (ROOT / folder).rglob("*.py")] + [ROOT / "conftest.py"]
    private = []
    for path in users:
        for module, names in imports(path):
            if not module.startswith("sqlite_faults"):
                continue
            sub = module.removeprefix("sqlite_faults").lstrip(".")
            if sub and sub not in sqlite_faults.PUBLIC_MODULES:
                private.append(f"{path.relative_to(ROOT)}: {module}")
            private += [f"{path.relative_to(ROOT)}: {module}.{name}"
                        for name in names if name.startswith("_")]
    assert not private, private


def test_every_public_module_exists() -> None:
    for module in sqlite_faults.PUBLIC_MODULES:
        path = TOOLKIT / module.replace(".", "/")
        assert path.with_suffix(".py").exists() or (path / "__init__.py").exists(), module


def test_every_public_error_of_the_toolkit_shares_its_base() -> None:
    errors = []
    for module in sqlite_faults.PUBLIC_MODULES:
        if module.endswith("__main__"):
            continue
        namespace = importlib.import_module(f"sqlite_faults.{module}")
        errors += [value for name, value in vars(namespace).items()
                   if isinstance(value, type) and issubclass(value, Exception)
                   and value.__module__ == namespace.__name__ and not name.startswith("_")]
    assert errors, "no error classes found: the walk is broken"
    assert all(issubclass(error, sqlite_faults.SqliteFaultsError) for error in errors), [
        error.__qualname__ for error in errors
        if not issubclass(error, sqlite_faults.SqliteFaultsError)]
