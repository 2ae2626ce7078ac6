"""Every package of the source tree is in the distribution (a non-editable install misses any
package pyproject.toml does not list)."""

from __future__ import annotations

import tomllib

from .conftest import REPO

ROOTS = {"siaga": "siaga", "flows": "siaga.flows", "integrations": "siaga.integrations"}


def test_every_package_is_listed() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for folder, package in ROOTS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO / folder).parts
            found.add(".".join((package, *parts)))
    assert found == set(config["packages"])
    assert {config["package-dir"][p] for p in ("siaga.flows", "siaga.integrations")} == {"flows", "integrations"}


def test_migration_scripts_are_package_data() -> None:
    """Alembic's versions/ folder is no package: its scripts ship only as package data."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    folder = REPO / "siaga" / "store" / "migrations"
    shipped = {p for pattern in data["siaga.store.migrations"] for p in folder.glob(pattern)}
    assert {*folder.glob("versions/*.py"), folder / "script.py.mako"} <= shipped
    assert list(folder.glob("versions/*.py")), "no migration found"
