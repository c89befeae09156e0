"""Loading policy files into the desired-state model: find, read, render, parse, check, build.

Every stage collects errors instead of stopping at the first, so one run reports everything.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.policy.build import Built, build_document
from reconciler.policy.crosscheck import crosscheck
from reconciler.policy.errors import PolicyError, PolicyInvalid
from reconciler.policy.model import Kind, Location, PolicySet
from reconciler.policy.safe_yaml import Document, YamlProblem, parse_documents, plain_locator
from reconciler.policy.schema import validate_document
from reconciler.policy.sources import DEFAULT_MAX_FILE_BYTES, Role, SourceError, SourceFile, discover, read_text
from reconciler.policy.template import TemplateProblem, render

_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class LoadResult:
    policy_set: PolicySet
    files: tuple[SourceFile, ...]
    kinds: Mapping[Kind, int]  # documents per kind
    errors: tuple[PolicyError, ...]

    @property
    def documents(self) -> int:
        return sum(self.kinds.values())


@dataclass
class _Loader:
    environ: Mapping[str, str]
    max_file_bytes: int
    errors: list[PolicyError] = field(default_factory=list)
    vars_by_dir: dict[str, dict[str, Any]] = field(default_factory=dict)

    def documents(self, source: SourceFile) -> list[Document]:
        try:
            text = read_text(source.path, self.max_file_bytes)
            if source.role is not Role.TEMPLATE:
                return parse_documents(text, plain_locator(source.path))
            variables = self.directory_vars(os.path.dirname(source.path))
            rendered, template_line = render(source.path, text, variables, self.environ)
            return parse_documents(rendered, lambda line, col: Location(source.path, template_line(line), col))
        except SourceError as exc:
            self.errors.append(exc.error)
        except (YamlProblem, TemplateProblem) as exc:
            self.errors.extend(exc.errors)
        return []

    def directory_vars(self, directory: str) -> dict[str, Any]:
        """Variables of every `*.vars.yaml` file in a directory (loaded once per directory)."""
        directory = directory or "."
        if directory not in self.vars_by_dir:
            merged: dict[str, Any] = {}
            origin: dict[str, Location] = {}
            for name in sorted(os.listdir(directory)):
                if not name.lower().endswith((".vars.yaml", ".vars.yml")) or name.startswith("."):
                    continue
                path = os.path.join(directory, name)
                if not os.path.isfile(path):
                    continue  # FIFOs and the like are reported by discovery, never read
                for doc in self.documents(SourceFile(path, Role.VARS)):
                    self._merge_vars(doc, merged, origin)
            self.vars_by_dir[directory] = merged
        return self.vars_by_dir[directory]

    def _merge_vars(self, doc: Document, merged: dict[str, Any], origin: dict[str, Location]) -> None:
        if not isinstance(doc.data, dict):
            self.errors.append(PolicyError(doc.start, "a vars file must be a mapping of variable names to values"))
            return
        for key, value in doc.data.items():
            where = doc.at((key,), key=True)
            if not _VAR_NAME.match(key) or key == "env":
                self.errors.append(
                    PolicyError(where, f"invalid variable name {key!r}", "letters, digits and _; `env` is reserved")
                )
            elif key in origin:
                self.errors.append(PolicyError(where, f"variable {key!r} is defined twice", f"also at {origin[key]}"))
            else:
                merged[key], origin[key] = value, where


def _declared(doc: Document) -> Built | None:
    """What a document with schema errors still tells the cross-checks: its kind and name, if readable."""
    data = doc.data if isinstance(doc.data, dict) else {}
    metadata = data.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if isinstance(data.get("kind"), str) and data["kind"] in set(Kind) and isinstance(name, str):
        return Built(kind=Kind(data["kind"]), name=name, value=None, name_at=doc.at(("metadata", "name")))
    return None


def _policy_set(built: list[Built]) -> PolicySet:
    policy_set = PolicySet()
    tables = {
        Kind.CONNECTION: policy_set.connections,
        Kind.REPOSITORY: policy_set.repositories,
        Kind.SCHEDULE: policy_set.schedules,
        Kind.RETENTION: policy_set.retentions,
        Kind.PROTECTION_POLICY: policy_set.policies,
        Kind.REPLICATION: policy_set.replications,
    }
    for item in built:
        tables[item.kind].setdefault(item.name, item.value)  # type: ignore[arg-type]
    return policy_set


def load(
    paths: Sequence[str | Path],
    *,
    environ: Mapping[str, str] | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> LoadResult:
    """Load everything under `paths`; never raises for bad input: problems are in `.errors`."""
    loader = _Loader(environ=os.environ if environ is None else environ, max_file_bytes=max_file_bytes)
    files, errors = discover([str(p) for p in paths])
    loader.errors.extend(errors)
    if not files and not errors:
        for path in paths:
            loader.errors.append(PolicyError(Location(str(path)), "no policy files (*.yaml, *.yml, *.yaml.j2) here"))
    built: list[Built] = []
    kinds: Counter[Kind] = Counter()
    for source in files:
        if source.role is Role.VARS:
            loader.directory_vars(os.path.dirname(source.path))  # reports its errors even without templates
            continue
        for doc in loader.documents(source):
            schema_errors = validate_document(doc)
            if schema_errors:
                loader.errors.extend(schema_errors)
                declared = _declared(doc)
                if declared:
                    built.append(declared)
                    kinds[declared.kind] += 1
                continue
            item, semantic_errors = build_document(doc)
            loader.errors.extend(semantic_errors)
            built.append(item)
            kinds[item.kind] += 1
    loader.errors.extend(crosscheck(built))
    return LoadResult(
        policy_set=_policy_set(built) if not loader.errors else PolicySet(),
        files=tuple(files),
        kinds=dict(kinds),
        errors=tuple(sorted(set(loader.errors))),
    )


def load_policies(
    paths: Sequence[str | Path],
    *,
    environ: Mapping[str, str] | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> PolicySet:
    """The desired state declared by the policy files under `paths`; raises `PolicyInvalid` with every error."""
    result = load(paths, environ=environ, max_file_bytes=max_file_bytes)
    if result.errors:
        raise PolicyInvalid(result.errors)
    return result.policy_set
