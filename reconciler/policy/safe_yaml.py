"""Reading YAML that nobody vouched for: round-trip parsing with hard limits, into plain data plus positions.

Checks run on the event stream before anything is built, so hostile input is refused cheaply: only the
standard tags (str, int, float, bool, null, map, seq; never `!!python/...` or custom `!tags`), bounded
nesting depth, bounded aliases, and a bounded size once aliases are expanded (alias bombs). Scalars that
resolve to a number or date but cannot be built (too long, out of range) are errors at the scalar. Duplicate
keys are reported with both places. Tabs in indentation get their own message, since YAML's is cryptic.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, NodeEvent
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from reconciler.policy.errors import PolicyError
from reconciler.policy.model import Location

MAX_DEPTH = 64
MAX_ALIASES = 1_000
MAX_NODES = 100_000  # per file, after expanding aliases
MAX_TAB_ERRORS = 10
# Longer integers are never a count or a size; Python refuses >4,300 decimal digits, and a long hex one
# would parse but crash every message that shows it. Checked on the text, before converting it.
MAX_INTEGER_CHARS = 100
SHOWN_CHARS = 40  # of a refused scalar, in its message

_STANDARD = "tag:yaml.org,2002:"
ALLOWED_TAGS = frozenset({None, "!"} | {_STANDARD + t for t in ("str", "int", "float", "bool", "null", "map", "seq")})

Path_ = tuple[str | int, ...]
# Maps a 1-based (line, col) of the parsed text to where the user should look (templates remap lines).
Locator = Callable[[int, int], Location]


def plain_locator(path: str) -> Locator:
    return lambda line, col: Location(path, line, col)


@dataclass
class Document:
    """One YAML document as plain JSON-like data, with the position of every key and value."""

    data: Any
    start: Location
    keys: dict[Path_, Location] = field(default_factory=dict)
    values: dict[Path_, Location] = field(default_factory=dict)

    def at(self, path: Path_, *, key: bool = False) -> Location:
        """The position of the node at `path` (its key if `key`), else of its nearest ancestor."""
        path = tuple(path)
        if key and path in self.keys:
            return self.keys[path]
        while path:
            if path in self.values:
                return self.values[path]
            path = path[:-1]
        return self.start


class YamlProblem(Exception):
    def __init__(self, errors: list[PolicyError]) -> None:
        super().__init__("\n".join(map(str, errors)))
        self.errors = errors


class _BadScalar(Exception):
    """A plain scalar that resolves to a number or timestamp which cannot be built; at the node's mark."""

    def __init__(self, mark: Any, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


_SCALAR_KINDS = {_STANDARD + "int": "integer", _STANDARD + "float": "number", _STANDARD + "timestamp": "date/time"}


def _shown(text: str) -> str:
    return repr(text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…")


class _Constructor(RoundTripConstructor):
    """ruamel's round-trip constructor, with scalars it cannot build (`2026-13-45`, `0x_`, a 5,000-digit
    integer) turned into an error at the scalar instead of a bare ValueError."""

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        if not isinstance(node, ScalarNode):
            return super().construct_object(node, deep)
        kind = _SCALAR_KINDS.get(node.tag)
        if kind == "integer" and len(node.value) > MAX_INTEGER_CHARS:
            raise _BadScalar(node.start_mark, f"integer of {len(node.value)} characters is too long "
                                              f"(at most {MAX_INTEGER_CHARS})")
        try:
            return super().construct_object(node, deep)
        except (ValueError, IndexError, OverflowError) as exc:
            if kind is None:
                raise
            # datetime says what is out of range ("month must be in 1..12"); other reasons are internals
            reason = f": {exc}" if isinstance(exc, ValueError) and len(str(exc)) <= SHOWN_CHARS else ""
            raise _BadScalar(node.start_mark, f"invalid {kind} {_shown(node.value)}{reason}") from None


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.Constructor = _Constructor
    yaml.allow_duplicate_keys = False
    return yaml


def _mark_location(locate: Locator, mark: Any) -> Location:
    if mark is None:
        return locate(1, 1)
    return locate(mark.line + 1, mark.column + 1)


def _check_tabs(text: str, locate: Locator) -> list[PolicyError]:
    errors = []
    for number, line in enumerate(text.splitlines(), start=1):
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        if "\t" in indent and line.strip():
            errors.append(
                PolicyError(
                    locate(number, indent.index("\t") + 1),
                    "tab character in indentation: YAML indents with spaces only",
                    "replace the tab with spaces (this project uses 2 per level)",
                )
            )
            if len(errors) >= MAX_TAB_ERRORS:
                break
    return errors


def _check_events(text: str, locate: Locator) -> list[PolicyError]:
    errors: list[PolicyError] = []
    depth = aliases = 0
    for event in _yaml().parse(text):
        where = _mark_location(locate, event.start_mark)
        if isinstance(event, NodeEvent) and not isinstance(event, AliasEvent):
            tag = getattr(event, "tag", None)
            if tag not in ALLOWED_TAGS:
                shown = tag.replace(_STANDARD, "!!") if isinstance(tag, str) else tag
                errors.append(
                    PolicyError(
                        where,
                        f"tag {shown} is not allowed: policy files are plain data",
                        "remove the tag; only standard YAML scalars, mappings and sequences are accepted",
                    )
                )
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                errors.append(PolicyError(where, f"nesting deeper than {MAX_DEPTH} levels"))
                return errors
        elif isinstance(event, CollectionEndEvent):
            depth -= 1
        elif isinstance(event, AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                errors.append(PolicyError(where, f"more than {MAX_ALIASES} aliases in one file"))
                return errors
    return errors


def _check_duplicate_keys(text: str, locate: Locator) -> tuple[list[PolicyError], list[Location]]:
    """Duplicate keys (both places), and where each document starts."""
    errors: list[PolicyError] = []
    starts: list[Location] = []
    def walk(node: Node) -> None:
        # per document: composed documents are freed as we go, so ids of an earlier one get reused
        seen: set[int] = set()
        stack = [node]
        while stack:
            current = stack.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            if isinstance(current, MappingNode):
                first: dict[str, Node] = {}
                for key, value in current.value:
                    stack.append(value)
                    if not isinstance(key, ScalarNode):
                        # a list or mapping as a key (`? [a]`): never valid here, and unhashable for the loader
                        kind = "list" if isinstance(key, SequenceNode) else "mapping"
                        errors.append(PolicyError(_mark_location(locate, key.start_mark),
                                                  f"mapping key must be a string, not a {kind}",
                                                  "write the key as plain text, e.g. `name: value`"))
                        continue
                    if key.value == "<<":
                        stack.append(key)
                        continue
                    if key.value in first:
                        before = _mark_location(locate, first[key.value].start_mark)
                        errors.append(
                            PolicyError(
                                _mark_location(locate, key.start_mark),
                                f"duplicate key {key.value!r}",
                                f"first defined at line {before.line}, column {before.col}",
                            )
                        )
                    else:
                        first[key.value] = key
            elif isinstance(current, SequenceNode):
                stack.extend(current.value)

    for root in _yaml().compose_all(text):
        if root is not None:
            starts.append(_mark_location(locate, root.start_mark))
            walk(root)
    return errors, starts


def _syntax_error(exc: YAMLError, locate: Locator, text: str) -> PolicyError:
    if isinstance(exc, ReaderError):
        before = text[: exc.position]
        line, col = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        return PolicyError(locate(line, col), f"control character U+{exc.character:04X} is not allowed in YAML")
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        hint = exc.context if exc.problem and exc.context else None
        if hint and exc.context_mark is not None and exc.context_mark is not mark:
            started = _mark_location(locate, exc.context_mark)
            hint += f" that starts at line {started.line}, column {started.col}"
        return PolicyError(_mark_location(locate, mark), f"YAML syntax error: {problem}", hint)
    return PolicyError(locate(1, 1), f"YAML syntax error: {exc}")


class _Converter:
    """CommentedMap/Seq to plain data, recording positions and counting expanded nodes."""

    def __init__(self, locate: Locator, budget: int) -> None:
        self.locate = locate
        self.budget = budget
        self.errors: list[PolicyError] = []

    def _loc(self, pair: tuple[int, int] | None, fallback: Location) -> Location:
        return self.locate(pair[0] + 1, pair[1] + 1) if pair else fallback

    def convert(self, node: Any, doc: Document, path: Path_, where: Location) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise _TooBig
        if isinstance(node, CommentedMap):
            result: dict[str, Any] = {}
            here = self._loc((node.lc.line, node.lc.col), where)
            for key, value in node.items():
                key_at = self._loc(_lc(node.lc.key, key), here)
                value_at = self._loc(_lc(node.lc.value, key), key_at)
                if not isinstance(key, str):
                    self.errors.append(PolicyError(key_at, f"mapping key {key!r} must be a string"))
                    continue
                doc.keys[(*path, key)] = key_at
                doc.values[(*path, key)] = value_at
                result[key] = self.convert(value, doc, (*path, key), value_at)
            return result
        if isinstance(node, CommentedSeq):
            items = []
            for index, value in enumerate(node):
                value_at = self._loc(_lc(node.lc.item, index), where)
                doc.values[(*path, index)] = value_at
                items.append(self.convert(value, doc, (*path, index), value_at))
            return items
        return _scalar(node)


class _TooBig(Exception):
    pass


def _lc(lookup: Callable[[Any], tuple[int, int]], key: Any) -> tuple[int, int] | None:
    try:
        return lookup(key)
    except (KeyError, IndexError, TypeError):
        return None  # keys merged in with `<<` carry no position of their own


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if type(value).__name__ == "ScalarBoolean":  # ruamel's anchored booleans subclass int
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return str(value)


def parse_documents(text: str, locate: Locator) -> list[Document]:
    """Every non-empty document of `text`; raises `YamlProblem` with all errors found."""
    errors = _check_tabs(text, locate)
    if errors:
        raise YamlProblem(errors)
    try:
        errors = _check_events(text, locate)
        if errors:
            raise YamlProblem(errors)
        errors, starts = _check_duplicate_keys(text, locate)
        if errors:
            raise YamlProblem(errors)
        loaded = list(_yaml().load_all(text))
    except YAMLError as exc:
        raise YamlProblem([_syntax_error(exc, locate, text)]) from None
    except RecursionError:
        raise YamlProblem([PolicyError(locate(1, 1), "nesting too deep")]) from None
    except _BadScalar as exc:
        hint = "quote it if it is meant as text"
        raise YamlProblem([PolicyError(_mark_location(locate, exc.mark), exc.message, hint)]) from None
    documents: list[Document] = []
    converter = _Converter(locate, MAX_NODES)
    starts_iter: Iterator[Location] = iter(starts)
    for root in loaded:
        if root is None:
            continue  # an empty document (only comments, or a stray ---)
        start = next(starts_iter, locate(1, 1))
        doc = Document(data=None, start=start)
        try:
            doc.data = converter.convert(root, doc, (), start)
        except _TooBig:
            raise YamlProblem(
                [
                    PolicyError(
                        start,
                        f"file expands to more than {MAX_NODES} values (alias bomb?)",
                        "use fewer aliases (*name), or split the file",
                    )
                ]
            ) from None
        documents.append(doc)
    if converter.errors:
        raise YamlProblem(converter.errors)
    return documents
