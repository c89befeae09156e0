"""Repository `compression`, `recordsize` and `encryption` become the native options of new VM datasets;
an encryption key only ever comes from a file that ZFS reads itself."""

from __future__ import annotations

from pathlib import Path

from reconciler.adapters.zfs.dataset_options import vm_dataset_options
from reconciler.policy.load import load_policies
from tests.unit.policy.helpers import BASE, load_errors, write


def _files(extra: str) -> dict[str, str]:
    return {"policies.yaml": BASE.replace("  dataset: tank/agentless\n", "  dataset: tank/agentless\n" + extra)}


def test_compression_recordsize_and_encryption_become_options_of_new_vm_datasets(tmp_path: Path) -> None:
    write(tmp_path, _files("  compression: zstd\n  recordsize: 1M\n  encryption:\n    keyFrom: {file: keys/tank.key}\n"
                           "    keyFormat: hex\n"))
    repo = load_policies([tmp_path], environ={}).repositories["tank"]
    assert vm_dataset_options(repo) == {
        "compression": "zstd",
        "recordsize": "1M",
        "encryption": "aes-256-gcm",
        "keyformat": "hex",
        "keylocation": f"file://{tmp_path}/keys/tank.key",  # relative to the policy file
    }


def test_a_repository_without_options_gives_new_datasets_none(tmp_path: Path) -> None:
    write(tmp_path, _files(""))
    assert vm_dataset_options(load_policies([tmp_path], environ={}).repositories["tank"]) == {}


def test_the_key_format_defaults_to_passphrase(tmp_path: Path) -> None:
    write(tmp_path, _files("  encryption:\n    keyFrom: {file: /etc/tank.key}\n    algorithm: aes-128-ccm\n"))
    options = vm_dataset_options(load_policies([tmp_path], environ={}).repositories["tank"])
    assert (options["encryption"], options["keyformat"]) == ("aes-128-ccm", "passphrase")


def test_an_encryption_key_from_the_environment_is_refused_at_its_line(tmp_path: Path) -> None:
    rows = load_errors(tmp_path, _files("  encryption:\n    keyFrom: {env: TANK_KEY}\n"))
    assert any("must come from a file" in message for _, _, _, message, _ in rows), rows
    (_, line, _, _, _) = next(r for r in rows if "must come from a file" in r[3])
    assert line == BASE.splitlines().index("  dataset: tank/agentless") + 3  # keyFrom, 1-based, 2 below dataset


def test_an_unknown_key_format_is_refused(tmp_path: Path) -> None:
    rows = load_errors(tmp_path, _files("  encryption:\n    keyFrom: {file: k}\n    keyFormat: pem\n"))
    assert any("keyFormat" in message or "pem" in message for _, _, _, message, _ in rows), rows
