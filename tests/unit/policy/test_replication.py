"""The Replication kind: a valid document builds the model; bad ones get an error at file:line:col."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.policy import dump_policies, load
from reconciler.policy.model import SshTarget
from tests.unit.policy.helpers import BASE, load_errors, write

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMHT41+rIsStDjxz197YrcCAMYS2kImI7btP2a/9LISn"
REPLICATION = f"""\
---
apiVersion: reconciler/v1
kind: Replication
metadata:
  name: offsite
spec:
  repository: tank
  target: ssh://backup@dr.example.com:2222/vault/replicas
  hostKey: {HOST_KEY}
  identityFrom:
    file: keys/id_ed25519
  schedule: hourly
  retention: keep
  bandwidthLimit: 10M
"""


def test_a_replication_builds_with_its_target_host_key_identity_and_bandwidth(tmp_path: Path) -> None:
    write(tmp_path, {"base.yaml": BASE + REPLICATION})
    result = load([tmp_path], environ={})
    assert not result.errors
    replication = result.policy_set.replications["offsite"]
    assert replication.target == SshTarget("backup", "dr.example.com", 2222, "vault/replicas")
    assert replication.host_key == HOST_KEY
    assert replication.identity_file == str(tmp_path / "keys" / "id_ed25519")  # relative to the policy file
    assert replication.bandwidth_limit == 10 * 2**20
    assert not replication.paused


def test_a_replication_round_trips_through_dump(tmp_path: Path) -> None:
    write(tmp_path, {"base.yaml": BASE + REPLICATION})
    first = load([tmp_path], environ={}).policy_set
    write(tmp_path / "again", {"all.yaml": dump_policies(first)})
    assert load([tmp_path / "again"], environ={}).policy_set.replications == first.replications


@pytest.mark.parametrize(
    ("replace", "by", "line", "col", "message"),
    [
        ("ssh://backup@dr.example.com:2222/vault/replicas", "ssh://dr.example.com/vault", 52, 11,
         "name the remote user"),
        ("ssh://backup@dr.example.com:2222/vault/replicas", "ssh://backup@dr.example.com:2222/", 52, 11,
         "the path must be a dataset"),
        ("ssh://backup@dr.example.com:2222/vault/replicas", "ssh://backup:pw@dr.example.com/vault", 52, 11,
         "must not carry a password"),
        ("ssh://backup@dr.example.com:2222/vault/replicas", "ssh://backup@bad_host!/vault", 52, 11,
         "is not a host name"),
        ("10M", "1K", 58, 19, "below 64K per second"),
        ("retention: keep", "retention: kept", 57, 14, "Retention 'kept' is not defined"),
        ("repository: tank", "repository: tanks", 51, 15, "Repository 'tanks' is not defined"),
    ],
)
def test_a_bad_replication_is_reported_at_file_line_col(tmp_path: Path, replace: str, by: str, line: int,
                                                        col: int, message: str) -> None:
    errors = load_errors(tmp_path, {"base.yaml": BASE + REPLICATION.replace(replace, by)})
    assert [(f, ln, c) for f, ln, c, m, _ in errors if message in m] == [("base.yaml", line, col)], errors


def test_an_inline_private_key_is_refused_by_the_schema(tmp_path: Path) -> None:
    bad = REPLICATION.replace("  identityFrom:\n    file: keys/id_ed25519\n",
                              "  identityFrom:\n    key: '-----BEGIN OPENSSH PRIVATE KEY-----'\n")
    errors = load_errors(tmp_path, {"base.yaml": BASE + bad})
    assert any("key" in m for _, _, _, m, _ in errors), errors
    assert not any("BEGIN OPENSSH" in m for _, _, _, m, _ in errors)


def test_a_host_key_that_is_not_a_public_key_line_is_refused(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, {"base.yaml": BASE + REPLICATION.replace(HOST_KEY, "SHA256:abc")})
    assert [(ln, c) for _, ln, c, _, _ in errors] == [(53, 12)], errors
