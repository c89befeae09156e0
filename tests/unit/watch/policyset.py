"""A small valid policy set on disk for the watch tests (names match tests/unit/core/world.py)."""

from __future__ import annotations

from pathlib import Path

CONNECTION = """\
apiVersion: reconciler/v1
kind: Connection
metadata: {name: vc1}
spec:
  address: https://127.0.0.1:9/sdk
  user: backup
  passwordFrom: {env: VC1_PASSWORD}
  insecure: true
"""
REPOSITORY = """\
apiVersion: reconciler/v1
kind: Repository
metadata: {name: main}
spec: {dataset: tank/agentless, driver: cli}
"""
SCHEDULE = """\
apiVersion: reconciler/v1
kind: Schedule
metadata: {name: daily}
spec:
  timezone: UTC
  rules:
    - every: {every}
"""
RETENTION = """\
apiVersion: reconciler/v1
kind: Retention
metadata: {name: std}
spec: {keepLast: 3}
"""
POLICY = """\
apiVersion: reconciler/v1
kind: ProtectionPolicy
metadata: {name: gold}
spec:
  connection: vc1
  repository: main
  schedule: daily
  retention: std
  select: {names: ["web-*"]}
"""


def write_policy_set(directory: Path, every: str = "24h") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    files = {"connection.yaml": CONNECTION, "repository.yaml": REPOSITORY,
             "schedule.yaml": SCHEDULE.replace("{every}", every), "retention.yaml": RETENTION,
             "policy.yaml": POLICY}
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory
