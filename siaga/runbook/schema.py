"""The JSON Schema editors use to complete and check runbooks (YAML language server).

It is the models' own schema, plus, for each action, the schema of its `with:` parameters, so an
editor knows what `payments.freeze` takes. A parameter may always be a ``{{ template }}``.
"""

from __future__ import annotations

import copy
from typing import Any

from ..actions import ActionRegistry
from .models import Runbook

SCHEMA_ID = "https://siaga.dev/schema/runbook.json"
_TEMPLATE = {"type": "string", "pattern": r"\{\{|\{%", "description": "A {{ template }}."}


def runbook_schema(registry: ActionRegistry) -> dict[str, Any]:
    schema = Runbook.model_json_schema(by_alias=True)
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}
    defs = schema.setdefault("$defs", {})
    step = defs["Step"]
    step["properties"]["action"] = {
        "type": "string",
        "description": "The action this step calls (`siaga actions` lists them).",
        "enum": registry.names(),
    }
    rules = []
    for spec in registry:
        params = _prefixed(spec.params.model_json_schema(by_alias=True), spec.name, defs)
        rules.append(
            {
                "if": {"properties": {"action": {"const": spec.name}}, "required": ["action"]},
                "then": {"properties": {"with": _allow_templates(params)}},
            }
        )
    step["allOf"] = rules
    return schema


def _prefixed(schema: dict[str, Any], prefix: str, defs: dict[str, Any]) -> dict[str, Any]:
    """Move `schema`'s own $defs into the root's under prefixed names, rewriting its $refs."""
    schema = copy.deepcopy(schema)
    local = schema.pop("$defs", {})
    renamed = {name: f"{prefix}.{name}" for name in local}

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/") and ref[8:] in renamed:
                node = {**node, "$ref": "#/$defs/" + renamed[ref[8:]]}
            return {key: rewrite(value) for key, value in node.items()}
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        return node

    for name, body in local.items():
        defs[renamed[name]] = rewrite(body)
    return rewrite(schema)


def _allow_templates(schema: dict[str, Any]) -> dict[str, Any]:
    properties = {
        name: {"anyOf": [body, _TEMPLATE], **({"description": body["description"]} if "description" in body else {})}
        for name, body in schema.get("properties", {}).items()
    }
    return {**schema, "properties": properties}
