"""JSON Schema validation (reconciler/policy/schemas/reconciler-v1.schema.json, shipped in the wheel and
linked from the checkout's schemas/ for editors, is the single source of truth for shape),
with every jsonschema error turned into a one-line message at the offending node's file:line:col."""

from __future__ import annotations

import difflib
import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

from reconciler.policy.errors import PolicyError
from reconciler.policy.safe_yaml import Document

# package data, so a wheel install finds it; the checkout's schemas/ is a symlink to this file
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "reconciler-v1.schema.json"

_SECRET_WORDS = {"password", "pwd", "secret", "key", "token"}
_TYPE_WORDS = {
    "integer": "a whole number",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "empty",
}


@functools.cache
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def _is_whole_number(_checker: object, value: Any) -> bool:
    # JSON Schema counts 3.0 as an integer; the model would then carry a float count into slicing and
    # ranges, so a policy's whole numbers are written as whole numbers
    return isinstance(value, int) and not isinstance(value, bool)


_Validator = validators.extend(
    Draft202012Validator, type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_whole_number)
)


@functools.cache
def _validator() -> Draft202012Validator:
    return _Validator(schema())


def _json_type(value: Any) -> str:
    for name, kinds in (
        ("true or false", bool),
        ("a whole number", int),
        ("a string", str),
        ("a mapping", dict),
        ("a list", list),
    ):
        if isinstance(value, kinds):
            return name
    if isinstance(value, float):
        return repr(value)  # `1.5`, `inf`, `nan`: the value says more than "a number"
    return "empty" if value is None else type(value).__name__


def _field(path: tuple[str | int, ...]) -> str:
    """`spec.select.names[2]` style name of a node, for messages."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "document"


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in choices}
        close = [lowered[word.lower()]] if word.lower() in lowered else []
    return f"did you mean {close[0]!r}?" if close else None


def _unknown_field(doc: Document, error: ValidationError) -> list[PolicyError]:
    path = tuple(error.absolute_path)
    known = sorted(error.schema.get("properties", {}))
    extras = [key for key in error.instance if key not in known]
    errors = []
    for key in extras:
        where = doc.at((*path, key), key=True)
        if key.lower() in _SECRET_WORDS and any(k.endswith("From") for k in known):
            reference = next(k for k in known if k.endswith("From"))
            errors.append(
                PolicyError(
                    where,
                    f"inline {key} is not allowed: policy files live in git, where a secret is readable by "
                    "everyone with the repository, forever",
                    f"write `{reference}: {{env: VARIABLE}}` or `{reference}: {{file: /path/to/secret}}` instead",
                )
            )
            continue
        hint = did_you_mean(key, known)
        if hint is None and known:
            hint = "known fields: " + ", ".join(known)
        errors.append(PolicyError(where, f"unknown field {key!r} in {_field(path)}", hint))
    return errors


def _message(doc: Document, error: ValidationError) -> list[PolicyError]:
    path = tuple(error.absolute_path)
    where = doc.at(path)
    value = error.instance
    name = _field(path)
    kind = error.validator
    expected = error.validator_value
    description = error.schema.get("description") if isinstance(error.schema, dict) else None
    if kind == "additionalProperties":
        return _unknown_field(doc, error)
    if kind == "required":
        missing = [key for key in expected if key not in value]
        if any(str(key).lower() in _SECRET_WORDS for key in value):
            # the inline secret is reported with what to write instead; "missing passwordFrom" would be noise
            missing = [key for key in missing if not key.endswith("From")]
        where = doc.at(path, key=True) if path else doc.start
        return [PolicyError(where, f"missing required field {key!r} in {name}") for key in missing]
    if kind == "type":
        if not path:
            return [
                PolicyError(
                    where,
                    "a policy document must be a mapping with apiVersion, kind, metadata and spec",
                )
            ]
        wanted = _TYPE_WORDS.get(expected, str(expected))
        return [PolicyError(where, f"{name} must be {wanted}, not {_json_type(value)}")]
    if kind == "const":
        return [PolicyError(where, f"{name} must be {expected!r}, not {value!r}")]
    if kind == "enum":
        choices = [str(c) for c in expected]
        hint = did_you_mean(str(value), choices)
        if name == "kind":
            return [PolicyError(where, f"unknown kind {value!r}: expected one of {', '.join(choices)}", hint)]
        return [PolicyError(where, f"{name}: {value!r} is not one of {', '.join(choices)}", hint)]
    if kind == "pattern":
        return [PolicyError(where, f"invalid {name} {value!r}", description)]
    if kind in ("minimum", "maximum"):
        if error.schema.get("type") == "integer" and isinstance(value, float):
            return []  # `.inf` where a whole number belongs: the type error says it, a bound would be noise
        bound = "at least" if kind == "minimum" else "at most"
        return [PolicyError(where, f"{name} must be {bound} {expected}, not {value}")]
    if kind in ("minItems", "minLength") and expected == 1:
        return [PolicyError(where, f"{name} must not be empty", description)]
    if kind == "uniqueItems":
        return [PolicyError(where, f"{name} lists the same item twice")]
    if kind in ("minProperties", "maxProperties"):
        choices = ", ".join(error.schema.get("properties", {}))
        if error.schema.get("maxProperties") == 1:
            return [PolicyError(where, f"{name} needs exactly one of: {choices}", description)]
        return [PolicyError(where, f"{name} needs at least one of: {choices}", description)]
    return [PolicyError(where, f"{name}: {error.message}", description)]


def validate_document(doc: Document) -> list[PolicyError]:
    """Schema errors of one document, one per offending node."""
    errors: list[PolicyError] = []
    for error in _validator().iter_errors(doc.data):
        errors.extend(_message(doc, error))
    return sorted(set(errors))
