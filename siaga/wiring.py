"""The composition root's parts: what an entry point makes once from its `Settings` and passes down.

Each entry point builds one `Wiring` (the command line in `siaga.cli.main`, `siaga up`, `siaga node`,
a flow run's body, the receiver through whoever starts it): the store's engine, the action registry,
the audit trail, the side-effect ledger, the key of the seals and the runbook library (its folder,
roster and connections) all come from here, so no part below looks them up again (the steps of a
flow run find their run's `Wiring` in `siaga.flows.run_body.RunBody.services`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from .actions import ActionRegistry
from .approvals.seal import ledger_key
from .audit import AuditTrail
from .catalog import Catalog
from .connections import load_connections
from .home import ensure_home
from .audit.ledger import Ledger
from .runbook import Roster
from .settings import Settings
from .team import find_roster

__all__ = ["Wiring"]


@dataclass
class Wiring:
    """The services of one entry point, each made on first use and then kept."""

    settings: Settings

    @cached_property
    def home(self) -> Path:
        """The data folder, made private (`siaga.home.ensure_home`)."""
        return ensure_home(self.settings.home)

    @cached_property
    def engine(self) -> Engine:
        """The store's engine, its database at the newest migration."""
        from .store import engine

        if self.settings.database_url is None:
            self.home  # noqa: B018 - the SQLite file lives in the private data folder
        return engine(self.settings.store_url, self.settings.home)

    @cached_property
    def registry(self) -> ActionRegistry:
        """The actions steps can call (every integration)."""
        from .integrations import default_registry

        return default_registry()

    @cached_property
    def audit(self) -> AuditTrail:
        return AuditTrail(self.engine)

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.engine)

    @cached_property
    def seal_key(self) -> bytes:
        """The key of Siaga's seals on votes (`siaga.approvals.seal`)."""
        return ledger_key(self.settings.home, self.settings)

    def folder(self, named: str | Path | None = None) -> Path:
        """The runbook folder: `named` (``--runbooks``), else the settings' library."""
        return Path(named) if named else self.settings.runbook_folder

    def catalog(self, folder: Path | None = None) -> Catalog:
        """The runbooks of `folder` (default: the library), checked against the registry."""
        return Catalog.load(folder or self.folder(), self.registry, self.settings)

    def roster(self, folder: Path | None = None) -> Roster | None:
        return find_roster(folder or self.folder(), self.settings)

    def connections(self, folder: Path | None = None) -> dict[str, dict[str, Any]]:
        return load_connections(folder or self.folder(), self.settings)
