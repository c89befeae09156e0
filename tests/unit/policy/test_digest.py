"""The policy digest a saved plan carries: it moves with what runs, not with how the files are written."""

from __future__ import annotations

import shutil
from pathlib import Path

from reconciler.policy import load_policies
from reconciler.policy.digest import policy_digest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "standalone-esxi" / "esxi.yaml"


def _digest_of(text: str, tmp_path: Path, name: str = "esxi.yaml") -> str:
    directory = tmp_path / name.replace(".", "-")
    directory.mkdir()
    (directory / name).write_text(text, encoding="utf-8")
    return policy_digest(load_policies([directory]))


def test_the_same_policies_give_the_same_digest(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE, tmp_path / "esxi.yaml")
    assert policy_digest(load_policies([tmp_path])) == policy_digest(load_policies([tmp_path]))


def test_comments_and_document_order_do_not_move_the_digest(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    documents = text.split("\n---\n")
    reordered = "\n---\n".join([*documents[1:], documents[0]])
    original = _digest_of(text, tmp_path, "a.yaml")
    assert _digest_of("# a comment\n" + text, tmp_path, "b.yaml") == original
    assert _digest_of(reordered, tmp_path, "c.yaml") == original


def test_a_changed_setting_moves_the_digest(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert "quiesce: preferred" in text
    assert _digest_of(text.replace("quiesce: preferred", "quiesce: off"), tmp_path, "a.yaml") != \
        _digest_of(text, tmp_path, "b.yaml")
