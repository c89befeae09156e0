"""Numbers and dates that Python cannot (or should not) build are policy errors at FILE:LINE:COL too.

A 5,000-digit integer once reached the user as `internal error: ValueError: Exceeds the limit (4300
digits)`; these go through `reconciler validate` and `reconciler fmt` as a user would run them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli.main import cli
from tests.unit.policy.helpers import BASE

RETENTION = "apiVersion: reconciler/v1\nkind: Retention\nmetadata:\n  name: r\nspec:\n  keepLast: {value}\n"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("9" * 5000, "integer of 5000 characters is too long (at most 100)"),
        ("-0x" + "f" * 4000, "integer of 4003 characters is too long (at most 100)"),
        ("2026-02-30", "invalid date/time '2026-02-30': day is out of range for month"),
        ("1e400", "spec.keepLast must be a whole number, not inf"),
        ("-.inf", "spec.keepLast must be a whole number, not -inf"),
    ],
    ids=["5000-digit-integer", "4000-hex-digit-integer", "february-30", "huge-exponent", "minus-infinity"],
)
def test_validate_reports_the_scalar_at_file_line_col_and_exits_1(tmp_path: Path, value: str, message: str) -> None:
    (tmp_path / "base.yaml").write_text(BASE)
    case = tmp_path / "case.yaml"
    case.write_text(RETENTION.format(value=value))
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert f"{case}:6:13: error: {message}" in result.stderr.splitlines()
    assert "internal error" not in result.output


def test_a_quoted_5000_digit_string_is_text_and_gets_the_schema_error(tmp_path: Path) -> None:
    case = tmp_path / "case.yaml"
    case.write_text(RETENTION.format(value="'" + "9" * 5000 + "'"))
    result = CliRunner().invoke(cli, ["validate", str(case)])
    assert result.exit_code == 1
    assert f"{case}:6:13: error: spec.keepLast must be a whole number, not a string" in result.stderr


def test_fmt_refuses_a_5000_digit_integer_at_its_place_and_leaves_the_file(tmp_path: Path) -> None:
    case = tmp_path / "case.yaml"
    text = RETENTION.format(value="9" * 5000)
    case.write_text(text)
    result = CliRunner().invoke(cli, ["fmt", str(case)])
    assert result.exit_code == 1
    assert f"{case}:6:13: error: integer of 5000 characters is too long (at most 100)" in result.stderr
    assert case.read_text() == text


def test_a_long_integer_in_a_vars_file_is_located_in_the_vars_file(tmp_path: Path) -> None:
    (tmp_path / "site.vars.yaml").write_text("copies: " + "7" * 5000 + "\n")
    (tmp_path / "r.yaml.j2").write_text(RETENTION.format(value="{{ copies }}"))
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{tmp_path / 'site.vars.yaml'}:1:9: error: integer of 5000 characters is too long" in result.stderr
