"""The settings: every variable Siaga reads is read in one place, typed, documented once (the
README's table is generated from it), and its secrets never shown."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from siaga.errors import BadInput
from siaga.settings import Settings, SettingsError, reference_markdown

REPO = Path(__file__).resolve().parent.parent.parent
SOURCES = [*sorted((REPO / "siaga").rglob("*.py")), *sorted((REPO / "flows").rglob("*.py")),
           *sorted((REPO / "integrations").rglob("*.py"))]


def test_defaults_from_an_empty_environment() -> None:
    settings = Settings.from_environ({"HOME": "/home/dewi"})
    assert settings.home == Path("/home/dewi/.siaga")
    assert settings.runbook_folder == (Path.cwd() / "runbooks").resolve()
    assert settings.store_url == "sqlite:////home/dewi/.siaga/siaga.db"
    assert (settings.receiver_host, settings.receiver_port) == ("127.0.0.1", 8787)
    assert (settings.gate_poll_seconds, settings.gate_park_after) == (0.5, 1.0)
    assert (settings.deadline_poll_seconds, settings.sitrep_poll_seconds) == (5.0, 5.0)
    assert settings.roster_file(Path("/lib")) == Path("/lib/roster.yaml")
    assert settings.connections_file(Path("/lib")) == Path("/lib/connections.yaml")
    assert settings.api_tokens == () and settings.hook_secrets == {} and settings.user is None


def test_every_variable_is_read_and_typed(tmp_path: Path) -> None:
    settings = Settings.from_environ({
        "SIAGA_HOME": str(tmp_path), "SIAGA_RUNBOOKS": str(tmp_path / "lib"), "SIAGA_ROSTER": "/etc/roster.yaml",
        "SIAGA_CONNECTIONS": "/etc/conn.yaml", "SIAGA_DATABASE_URL": "postgresql+psycopg://siaga:pw@db/siaga",
        "SIAGA_USER": "citra", "SIAGA_RECEIVER_HOST": "0.0.0.0", "SIAGA_RECEIVER_PORT": " 9000 ",
        "SIAGA_API_TOKEN": "a, b,,", "SIAGA_SNS_TOPIC_ARNS": "arn:1,arn:2", "SIAGA_HOOK_SECRET_SOCIAL": "k1,k2",
        "SIAGA_HOOK_SECRET_": "nameless", "SIAGA_GATE_POLL_SECONDS": "0.05", "SIAGA_GATE_PARK_AFTER": "0",
        "PREFECT_API_URL": "http://prefect:4200/api", "UNRELATED": "x",
    })
    assert settings.home == tmp_path and settings.runbook_folder == tmp_path / "lib"
    assert settings.roster_file(Path("/lib")) == Path("/etc/roster.yaml")
    assert settings.connections_file(Path("/lib")) == Path("/etc/conn.yaml")
    assert settings.store_url == "postgresql+psycopg://siaga:pw@db/siaga"
    assert (settings.user, settings.receiver_host, settings.receiver_port) == ("citra", "0.0.0.0", 9000)
    assert [t.get_secret_value() for t in settings.api_tokens] == ["a", "b"]
    assert settings.sns_topic_arns == ("arn:1", "arn:2")
    assert {name: [s.get_secret_value() for s in keys] for name, keys in settings.hook_secrets.items()} == {
        "social": ["k1", "k2"]}
    assert (settings.gate_poll_seconds, settings.gate_park_after) == (0.05, 0.0)
    assert settings.prefect_api_url == "http://prefect:4200/api"


@pytest.mark.parametrize(("variable", "value"), [
    ("SIAGA_RECEIVER_PORT", "eighty"), ("SIAGA_RECEIVER_PORT", "70000"), ("SIAGA_GATE_POLL_SECONDS", "soon"),
    ("SIAGA_SITREP_POLL_SECONDS", "-1"), ("SIAGA_DEADLINE_POLL_SECONDS", "nan"),
])
def test_a_value_siaga_cannot_use_is_refused_by_name(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable) as raised:
        Settings.from_environ({variable: value})
    assert isinstance(raised.value, BadInput)  # the command line says it and exits 2


def test_no_repr_shows_a_secret() -> None:
    canaries = {
        "SIAGA_DATABASE_URL": "postgresql://siaga:canary-db-pw@db/siaga", "SIAGA_LEDGER_KEY": "canary-ledger",
        "SIAGA_ALERTMANAGER_TOKEN": "canary-am", "SIAGA_GRAFANA_TOKEN": "canary-gt",
        "SIAGA_GRAFANA_HMAC_SECRET": "canary-gh", "SIAGA_PAGERDUTY_HMAC_SECRET": "canary-pd",
        "SIAGA_HEARTBEAT_TOKEN": "canary-hb", "SIAGA_API_TOKEN": "canary-api", "SIAGA_HOOK_SECRET_X": "canary-x",
    }
    settings = Settings.from_environ(canaries)
    shown = repr(settings) + str(settings) + f"{settings}"
    assert "canary" not in shown
    assert "SIAGA" not in shown and "runbooks=None" in shown  # the rest is shown as it is
    assert isinstance(settings.ledger_key, SecretStr) and settings.ledger_key.get_secret_value() == "canary-ledger"


def test_the_readme_table_is_the_reference_list() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- settings:[^\n]*-->\n(.*?)<!-- /settings -->", readme, re.DOTALL)
    assert found, "README.md lost its settings table markers"
    assert found.group(1) == reference_markdown(), "regenerate the README's table from siaga.settings.reference_markdown()"


def test_siaga_reads_its_variables_only_in_the_settings() -> None:
    """No module but `siaga.settings` names a SIAGA_* variable in a read of the environment
    (`os.environ`, `os.getenv`, `environ.get`): those go through `Settings.from_environ`. The runbook
    secrets (``SIAGA_SECRET_*``, `siaga.secrets`) are read where a step uses them; `siaga up` and
    `siaga node` write the runbook folder into their environment for the runs they serve."""
    readers = []
    for path in SOURCES:
        if path == REPO / "siaga" / "settings.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) or isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
                text = ast.unparse(node)
                if re.search(r"(environ|getenv)\b.*['\"](SIAGA_(?!SECRET_)[A-Z_]+|PREFECT_UI_URL)['\"]", text):
                    readers.append(f"{path.relative_to(REPO)}:{node.lineno}: {text[:80]}")
    assert not readers, "\n".join(readers)
