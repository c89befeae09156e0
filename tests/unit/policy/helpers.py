"""Writing policy files into a temporary directory and loading them, for the policy tests."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from reconciler.policy import load
from reconciler.policy.errors import PolicyError

# A small valid policy set the broken cases refer to (connection vc, repository tank, schedule hourly,
# retention keep, policy web).
BASE = """\
apiVersion: reconciler/v1
kind: Connection
metadata:
  name: vc
spec:
  address: vc.example.com
  user: backup
  passwordFrom:
    env: VC_PASSWORD
  insecure: true
---
apiVersion: reconciler/v1
kind: Repository
metadata:
  name: tank
spec:
  dataset: tank/agentless
---
apiVersion: reconciler/v1
kind: Schedule
metadata:
  name: hourly
spec:
  rules:
    - every: 1h
---
apiVersion: reconciler/v1
kind: Retention
metadata:
  name: keep
spec:
  keepLast: 3
---
apiVersion: reconciler/v1
kind: ProtectionPolicy
metadata:
  name: web
spec:
  connection: vc
  repository: tank
  schedule: hourly
  retention: keep
  select:
    names: [web-*]
"""


def write(directory: Path, files: Mapping[str, str | bytes]) -> None:
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def load_errors(
    directory: Path, files: Mapping[str, str | bytes], environ: Mapping[str, str] | None = None
) -> list[tuple[str, int, int, str, str | None]]:
    """(file relative to `directory`, line, col, message, hint) of every error, sorted."""
    write(directory, files)
    result = load([directory], environ=environ or {})
    return [_row(directory, e) for e in result.errors]


def _row(directory: Path, error: PolicyError) -> tuple[str, int, int, str, str | None]:
    where = error.location
    return (os.path.relpath(where.file, directory), where.line, where.col, error.message, error.hint)
