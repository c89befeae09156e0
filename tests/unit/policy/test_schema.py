"""The JSON Schema is the single source of truth for shape: valid draft 2020-12, every field described."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

from reconciler.policy.schema import schema


def _properties(node: Any, path: str = "") -> list[tuple[str, dict]]:
    found = []
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            found.append((f"{path}.{name}", sub))
        for key, sub in node.items():
            found.extend(_properties(sub, f"{path}/{key}"))
    elif isinstance(node, list):
        for index, sub in enumerate(node):
            found.extend(_properties(sub, f"{path}[{index}]"))
    return found


def test_the_schema_is_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(schema())


def test_every_field_has_a_description_for_editors() -> None:
    defs = schema()["$defs"]

    def described(sub: dict) -> bool:
        if "description" in sub:
            return True
        ref = sub.get("$ref", "")
        target: Any = schema()
        for part in ref.removeprefix("#/").split("/") if ref else ():
            target = target[part]
        return bool(ref) and "description" in target

    missing = [path for path, sub in _properties(schema()) if "if" not in path and not described(sub)]
    assert missing == []
    assert all("description" in definition for definition in defs.values())
