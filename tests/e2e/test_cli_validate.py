"""`reconciler validate`: exit codes, FILE:LINE:COL output, JSON, and never a traceback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.cli.main import cli
from tests.unit.policy.helpers import BASE

ROOT = Path(__file__).resolve().parents[2]
BROKEN = BASE.replace("keepLast: 3", "keepLast: 0").replace("retention: keep", "retention: kept")


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, ["validate", *args], env=env, catch_exceptions=False)


def test_the_shipped_policies_and_examples_are_valid() -> None:
    result = run(str(ROOT / "policies"), str(ROOT / "examples"))
    assert result.exit_code == 0, result.output
    assert re.match(r"valid: \d+ files, \d+ documents: \d+ connections, ", result.stdout)


def test_errors_are_printed_as_file_line_col_with_hints_and_exit_1(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(BROKEN)
    result = run(str(tmp_path))
    assert result.exit_code == 1
    path = tmp_path / "p.yaml"
    assert result.stderr.splitlines() == [
        f"{path}:32:13: error: spec.keepLast must be at least 1, not 0",
        f"{path}:42:14: error: Retention 'kept' is not defined",
        "    hint: did you mean 'keep'?",
        "invalid: 2 errors in 1 file, 5 documents: 1 connection, 1 repository, 1 schedule, 1 retention, "
        "1 protection policy",
    ]


def test_json_output_lists_errors_and_a_summary(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(BROKEN)
    result = run("--json", str(tmp_path))
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert payload["valid"] is False
    assert payload["errors"][1] == {
        "file": str(tmp_path / "p.yaml"),
        "line": 42,
        "col": 14,
        "message": "Retention 'kept' is not defined",
        "hint": "did you mean 'keep'?",
        "severity": "error",
    }
    assert payload["summary"]["documents"] == 5


def test_json_output_of_a_valid_set() -> None:
    payload = json.loads(run("--json", str(ROOT / "policies")).stdout)
    assert payload["valid"] is True
    assert payload["errors"] == []
    assert payload["summary"]["ProtectionPolicy"] == 2


def test_a_file_named_twice_is_loaded_once() -> None:
    result = run(str(ROOT / "policies"), str(ROOT / "policies" / "connections.yaml"))
    assert result.exit_code == 0, result.output


def test_max_file_size_is_configurable(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(BASE)
    result = run("--max-file-size", "100", str(tmp_path))
    assert result.exit_code == 1
    assert "file too large: more than 100 bytes" in result.stderr


def test_an_unexpected_failure_is_an_internal_error_with_exit_2_not_a_traceback(monkeypatch, tmp_path: Path) -> None:
    import reconciler.cli.validate as command

    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(command, "load", explode)  # our own code, to simulate a bug
    result = run(str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr == "internal error: RuntimeError: boom (please report this)\n"


@pytest.mark.timeout(20)
def test_a_fifo_and_a_symlink_loop_do_not_hang_validate(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(BASE)
    os.mkfifo(tmp_path / "fifo.yaml")
    (tmp_path / "loop.yml").symlink_to("loop.yml")
    result = run(str(tmp_path))
    assert result.exit_code == 1
    assert f"{tmp_path / 'fifo.yaml'}:1:1: error: a FIFO" in result.stderr
    assert f"{tmp_path / 'loop.yml'}:1:1: error: symlink loop" in result.stderr


_YAML_NOISE = st.text(alphabet=":-[]{}#&*!|>'\"\n\t %@`,?abc01", max_size=8)


@st.composite
def mangled_policies(draw: st.DrawFn) -> bytes:
    text = BASE
    for _ in range(draw(st.integers(1, 4))):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 10)))
        text = text[:start] + draw(_YAML_NOISE) + text[end:]
    return text.encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mangled_policies(), st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_any_input_gives_exit_0_or_1_and_never_a_traceback(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "p.yaml"
        path.write_bytes(content)
        result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code in (0, 1), result.output
    assert "Traceback" not in result.output


def test_validate_as_a_real_process() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", "policies", "examples"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("valid: ")


def test_a_real_process_reports_hostile_input_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "evil.yaml").write_text(f"a: !!python/object/apply:os.system ['touch {tmp_path}/pwned']\n")
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "is not allowed: policy files are plain data" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "pwned").exists()
