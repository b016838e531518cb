"""The folders keep their promises: hub/ and contracts/ never import a protocol library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

PROTOCOL_LIBRARIES = {"requests", "zeep", "lxml", "paramiko", "urllib3", "asyncssh"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("folder", ["hub", "contracts", "sync_jobs"])
def test_no_protocol_library_outside_adapters(folder):
    offenders = {
        str(path.relative_to(REPO)): sorted(_imports(path) & PROTOCOL_LIBRARIES)
        for path in (REPO / folder).rglob("*.py")
        if _imports(path) & PROTOCOL_LIBRARIES
    }
    assert offenders == {}


def test_contracts_depend_on_nothing_of_ours_but_the_error_tree():
    ours = {"hub", "adapters", "sync_jobs", "certs", "sandbox"}
    for path in (REPO / "contracts").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ours:
                assert node.module == "hub.errors", f"{path.name} imports {node.module}"


def test_sandbox_knows_nothing_of_the_hub():
    # The simulated agencies are independent systems: they must not borrow our contracts or adapters.
    for path in (REPO / "sandbox").rglob("*.py"):
        assert not _imports(path) & {"hub", "adapters", "contracts"} or path.name == "cluster.py", path.name


def test_every_data_file_the_packages_read_is_in_the_wheel():
    """An installed hub (not this checkout) must still find its verdict rules, WSDLs, templates …:
    every file beside the code that is neither code nor prose is named by package-data."""
    import fnmatch
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]["package-data"]
    unpackaged = []
    for package in ("hub", "adapters", "contracts", "sync_jobs", "certs", "sandbox"):
        for path in sorted((REPO / package).rglob("*")):
            relative = path.relative_to(REPO / package).as_posix()
            if path.is_dir() or "__pycache__" in relative or path.suffix in (".py", ".pyc", ".md"):
                continue
            if not any(fnmatch.fnmatch(relative, pattern) for pattern in config.get(package, [])):
                unpackaged.append(f"{package}/{relative}")
    assert unpackaged == []
