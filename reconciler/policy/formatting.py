"""Canonical layout of policy files (`reconciler fmt`): ruamel.yaml round-trip, comments and key order kept.

Canonical means: 2-space indentation, sequences indented under their key (`key:\\n  - item`), no line
wrapping, quotes as written, `---` only between documents, empty documents dropped. Only YAML that
passes the safe-loading checks is reformatted.
"""

from __future__ import annotations

import io
import re

from ruamel.yaml import YAML

from reconciler.policy.safe_yaml import parse_documents, plain_locator


def canonical_yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096  # never fold long strings
    yaml.preserve_quotes = True
    return yaml


_LEADING_MARKER = re.compile(r"^((?:[ \t]*(?:#[^\n]*)?\n)*)---[ \t]*(#[^\n]*)?\n")


def _drop_leading_marker(text: str) -> str:
    """`---` before the first document: ruamel would drop the comments above it (the schema modeline)."""
    match = _LEADING_MARKER.match(text)
    if not match:
        return text
    return match.group(1) + (match.group(2) + "\n" if match.group(2) else "") + text[match.end() :]


def format_text(text: str, path: str = "<text>") -> str:
    """The canonical form of `text`; raises `YamlProblem` (with locations) for unsafe or broken YAML."""
    parse_documents(text, plain_locator(path))
    text = _drop_leading_marker(text)
    yaml = canonical_yaml()
    documents = [doc for doc in yaml.load_all(text) if doc is not None]
    if not documents:
        return text  # only comments: nothing to lay out, and ruamel would drop them
    stream = io.StringIO()
    yaml.dump_all(documents, stream)
    return stream.getvalue()
