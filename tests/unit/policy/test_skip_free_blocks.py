"""`skipFreeBlocks`: thin backups are off unless a policy turns them on; anything but a boolean is refused."""

from __future__ import annotations

from pathlib import Path

from reconciler.policy.load import load, load_policies
from tests.unit.policy.helpers import BASE, load_errors, write


def _files(line: str) -> dict[str, str]:
    return {"policies.yaml": BASE + (f"  {line}\n" if line else "")}


def test_thin_backups_are_off_by_default(tmp_path: Path) -> None:
    write(tmp_path, _files(""))
    assert load_policies([tmp_path], environ={}).policies["web"].skip_free_blocks is False


def test_a_policy_can_turn_thin_backups_on(tmp_path: Path) -> None:
    write(tmp_path, _files("skipFreeBlocks: true"))
    assert load_policies([tmp_path], environ={}).policies["web"].skip_free_blocks is True
    assert not load([tmp_path], environ={}).errors


def test_skip_free_blocks_must_be_a_boolean(tmp_path: Path) -> None:
    rows = load_errors(tmp_path, _files('skipFreeBlocks: "yes"'))
    assert any("skipFreeBlocks" in message or "boolean" in message for _, _, _, message, _ in rows), rows
