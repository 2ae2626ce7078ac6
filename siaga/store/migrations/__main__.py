"""Write a new migration: ``python -m siaga.store.migrations "add the audit table"`` (developers only)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command

from siaga.store.migrations import alembic_config, head


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print('usage: python -m siaga.store.migrations "what changed"', file=sys.stderr)
        return 2
    from sqlalchemy import create_engine

    from siaga.store import upgrade

    number = int(head() or 0) + 1
    with tempfile.TemporaryDirectory() as folder:
        scratch = create_engine(f"sqlite:///{Path(folder) / 'scratch.db'}")
        upgrade(scratch)
        config = alembic_config()
        with scratch.begin() as connection:
            config.attributes["connection"] = connection
            command.revision(
                config, message=argv[0], autogenerate=True, rev_id=f"{number:04d}"
            )
        scratch.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
