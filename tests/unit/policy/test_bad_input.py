"""Broken policies: each case gets a clear error at file:line:col, and nothing else goes wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.policy.helpers import BASE, load_errors

DOC = "apiVersion: reconciler/v1\nkind: Retention\nmetadata:\n  name: r\nspec:\n"
CONNECTION = "apiVersion: reconciler/v1\nkind: Connection\nmetadata:\n  name: c\nspec:\n"
POLICY = "apiVersion: reconciler/v1\nkind: ProtectionPolicy\nmetadata:\n  name: p\nspec:\n"
SCHEDULE = "apiVersion: reconciler/v1\nkind: Schedule\nmetadata:\n  name: s\nspec:\n"
POLICY_REFS = "  connection: vc\n  repository: tank\n  schedule: hourly\n  retention: keep\n"
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
)

# (case id, content of case.yaml, [(line, col, message fragment)])
CASES = [
    ("yaml_syntax_error", DOC + "  keepLast: 1\n  daily: x: 2\n", [(7, 11, "YAML syntax error: mapping values")]),
    ("tab_in_indentation", DOC + "\tkeepLast: 1\n", [(6, 1, "tab character in indentation")]),
    ("duplicate_key", DOC + "  keepLast: 1\n  keepLast: 2\n", [(7, 3, "duplicate key 'keepLast'")]),
    ("unknown_kind", DOC.replace("Retention", "Retension") + "  keepLast: 1\n", [(2, 7, "unknown kind 'Retension'")]),
    ("unknown_field", DOC + "  keepLst: 3\n", [(6, 3, "unknown field 'keepLst' in spec")]),
    ("wrong_type", DOC + "  daily: seven\n", [(6, 10, "spec.daily must be a whole number, not a string")]),
    (
        "wrong_type_boolean",
        POLICY + POLICY_REFS + "  select: {ids: [vm-9]}\n  paused: 'no'\n",
        [(11, 11, "spec.paused must be true or false, not a string")],
    ),
    (
        "missing_field",
        DOC.replace("kind: Retention", "kind: Repository") + "  driver: cli\n",
        [(5, 1, "missing required field 'dataset' in spec")],
    ),
    ("document_not_a_mapping", "- just\n- a list\n", [(1, 1, "a policy document must be a mapping")]),
    ("complex_key_list", DOC + "  ? [a, [b]]\n  : 1\n", [(6, 5, "mapping key must be a string, not a list")]),
    ("complex_key_mapping", "? {a: [1]}\n: b\n", [(1, 3, "mapping key must be a string, not a mapping")]),
    (
        "complex_key_in_a_later_document",
        (DOC + "  keepLast: 1\n---\n") * 4 + DOC + " ? keepLast:\n    - 1\n",
        [(34, 4, "mapping key must be a string, not a mapping")],
    ),
    (
        "wrong_api_version",
        DOC.replace("reconciler/v1", "reconciler/v2") + "  keepLast: 1\n",
        [(1, 13, "apiVersion must be 'reconciler/v1', not 'reconciler/v2'")],
    ),
    (
        "inline_password",
        CONNECTION + "  address: vc2.example.com\n  user: u\n  password: hunter2\n"
        "  passwordFrom: {env: X}\n  insecure: true\n",
        [(8, 3, "inline password is not allowed")],
    ),
    (
        "password_from_both",
        CONNECTION + "  address: h\n  user: u\n  passwordFrom: {env: X, file: /x}\n  insecure: true\n",
        [(8, 17, "spec.passwordFrom needs exactly one of: env, file")],
    ),
    (
        "unresolved_reference",
        POLICY + POLICY_REFS.replace("keep", "forever") + "  select: {ids: [vm-9]}\n",
        [(9, 14, "Retention 'forever' is not defined")],
    ),
    ("alias_bomb", ALIAS_BOMB, [(1, 1, "expands to more than 100000 values")]),
    ("deep_nesting", "a: " + "[" * 100 + "]" * 100 + "\n", [(1, 67, "nesting deeper than 64 levels")]),
    (
        "python_tag",
        DOC + "  keepLast: !!python/object/apply:os.system ['touch {marker}']\n",
        [(6, 13, "tag !!python/object/apply:os.system is not allowed")],
    ),
    ("custom_tag", DOC + "  keepLast: !include other.yaml\n", [(6, 13, "tag !include is not allowed")]),
    ("control_character", DOC + "  keepLast: 1\x07\n", [(6, 14, "control character U+0007")]),
    (
        "missing_thumbprint",
        CONNECTION + "  address: h.example.com\n  user: u\n  passwordFrom: {env: X}\n",
        [(5, 1, "no thumbprint: the server's certificate would not be verified")],
    ),
    (
        "short_thumbprint",
        CONNECTION + "  address: h\n  user: u\n  passwordFrom: {env: X}\n  thumbprint: AA:BB:CC\n",
        [(9, 15, "thumbprint has 3 bytes")],
    ),
    (
        "http_without_insecure",
        CONNECTION + "  address: http://h/sdk\n  user: u\n  passwordFrom: {env: X}\n"
        "  thumbprint: " + ":".join(["AB"] * 20) + "\n",
        [(6, 12, "http:// sends the password in clear text")],
    ),
    (
        "credentials_in_address",
        CONNECTION + "  address: https://root:pw@h/sdk\n  user: u\n  passwordFrom: {env: X}\n  insecure: true\n",
        [(6, 12, "the address must not carry credentials")],
    ),
    ("bad_duration", SCHEDULE + "  rules:\n    - every: 1h30\n", [(7, 14, "invalid spec.rules[0].every '1h30'")]),
    ("zero_interval", SCHEDULE + "  rules:\n    - every: 0s\n", [(7, 14, "`every` must be longer than 0s")]),
    (
        "bad_window",
        SCHEDULE + "  rules:\n    - window: 25:00-18:00\n      every: 1h\n",
        [(7, 15, "invalid time '25:00'")],
    ),
    (
        "bad_day",
        SCHEDULE + "  rules:\n    - days: [monday]\n      every: 1h\n",
        [(7, 14, "invalid spec.rules[0].days[0]")],
    ),
    (
        "bad_timezone",
        SCHEDULE + "  timezone: Europe/Berln\n  cron: 0 1 * * *\n",
        [(6, 13, "unknown time zone 'Europe/Berln'")],
    ),
    ("bad_cron", SCHEDULE + "  cron: 61 * * * *\n", [(6, 9, "invalid cron expression '61 * * * *'")]),
    (
        "rules_and_cron",
        SCHEDULE + "  cron: 0 1 * * *\n  rules:\n    - every: 1h\n",
        [(5, 1, "a schedule needs either `rules` or `cron` (exactly one)")],
    ),
    ("retention_keeps_nothing", DOC + "  keepLast: 0\n", [(6, 13, "spec.keepLast must be at least 1, not 0")]),
    (
        "bad_recordsize",
        DOC.replace("kind: Retention", "kind: Repository") + "  dataset: t/a\n  recordsize: 100K\n",
        [(7, 15, "recordsize '100K' must be a power of two")],
    ),
    (
        "selector_claims_nothing",
        POLICY + POLICY_REFS + "  select:\n    exclude: {names: [x]}\n",
        [(10, 3, "select claims no VM")],
    ),
    ("integer_of_5000_digits", DOC + "  keepLast: " + "9" * 5000 + "\n", [(6, 13, "integer of 5000 characters")]),
    ("huge_hex_integer", DOC + "  keepLast: 0x" + "f" * 4000 + "\n", [(6, 13, "integer of 4002 characters")]),
    (
        "huge_integer_in_a_list_of_ids",
        POLICY + POLICY_REFS + "  select:\n    ids: [vm-1, " + "1" * 5000 + "]\n",
        [(11, 17, "integer of 5000 characters")],
    ),
    ("invalid_integer_literal", DOC + "  keepLast: 0x_\n", [(6, 13, "invalid integer '0x_'")]),
    ("out_of_range_date", DOC + "  keepLast: 2026-13-45\n", [(6, 13, "invalid date/time '2026-13-45': month")]),
    ("huge_exponent_float", DOC + "  keepLast: 1e400\n", [(6, 13, "spec.keepLast must be a whole number, not inf")]),
    ("infinity_as_a_count", DOC + "  keepLast: .inf\n", [(6, 13, "spec.keepLast must be a whole number, not inf")]),
    ("nan_as_a_count", DOC + "  keepLast: .nan\n", [(6, 13, "spec.keepLast must be a whole number, not nan")]),
    ("whole_float_as_a_count", DOC + "  keepLast: 3.0\n", [(6, 13, "spec.keepLast must be a whole number, not 3.0")]),
    (
        "bad_name",
        DOC.replace("name: r", "name: My_Policy") + "  keepLast: 1\n",
        [(4, 9, "invalid metadata.name 'My_Policy'")],
    ),
]


@pytest.mark.parametrize(("content", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_policy_reports_file_line_col_and_message(tmp_path: Path, content: str, expected: list) -> None:
    marker = tmp_path / "executed"
    errors = load_errors(tmp_path, {"base.yaml": BASE, "case.yaml": content.replace("{marker}", str(marker))})
    assert [(f, line, col) for f, line, col, _, _ in errors] == [("case.yaml", line, col) for line, col, _ in expected]
    for (_, _, _, message, _), (_, _, fragment) in zip(errors, expected, strict=True):
        assert fragment in message
    assert not marker.exists()


def test_unknown_field_hints_the_closest_known_field(tmp_path: Path) -> None:
    [error] = load_errors(tmp_path, {"case.yaml": DOC + "  keepLst: 3\n"})
    assert error[4] == "did you mean 'keepLast'?"


def test_unknown_kind_hints_the_closest_kind(tmp_path: Path) -> None:
    [error] = load_errors(tmp_path, {"case.yaml": DOC.replace("Retention", "Retension") + "  keepLast: 1\n"})
    assert error[4] == "did you mean 'Retention'?"


def test_inline_password_says_what_to_write_instead_and_never_echoes_the_secret(tmp_path: Path) -> None:
    content = CONNECTION + "  address: h\n  user: u\n  password: hunter2\n  insecure: true\n"
    [(_, _, _, message, hint)] = load_errors(tmp_path, {"case.yaml": content})  # not also "missing passwordFrom"
    assert "git" in message
    assert "passwordFrom: {env: VARIABLE}" in (hint or "")
    assert "hunter2" not in message + (hint or "")


def test_duplicate_keys_hint_where_the_key_was_first_defined(tmp_path: Path) -> None:
    [error] = load_errors(tmp_path, {"case.yaml": DOC + "  keepLast: 1\n  keepLast: 2\n"})
    assert error[4] == "first defined at line 6, column 3"


def test_duplicate_names_of_one_kind_are_reported_at_both_places(tmp_path: Path) -> None:
    errors = load_errors(
        tmp_path, {"base.yaml": BASE, "case.yaml": DOC.replace("name: r", "name: keep") + "  keepLast: 1\n"}
    )
    assert [(f, line, col) for f, line, col, _, _ in errors] == [("base.yaml", 30, 9), ("case.yaml", 4, 9)]
    assert all(message == "duplicate Retention 'keep'" for _, _, _, message, _ in errors)
    assert errors[0][4] == f"also defined at {tmp_path / 'case.yaml'}:4:9"


def test_same_name_in_different_kinds_is_fine(tmp_path: Path) -> None:
    assert (
        load_errors(tmp_path, {"base.yaml": BASE, "case.yaml": DOC.replace("name: r", "name: web") + "  keepLast: 1\n"})
        == []
    )


def test_a_vm_claimed_by_two_policies_on_one_connection_is_reported_at_both_places(tmp_path: Path) -> None:
    second = POLICY.replace("name: p", "name: q") + POLICY_REFS + "  select:\n    ids: [vm-7]\n"
    first = POLICY + POLICY_REFS + "  select:\n    ids: [vm-1, vm-7]\n"
    errors = load_errors(tmp_path, {"base.yaml": BASE, "a.yaml": first, "b.yaml": second})
    assert [(f, line, col) for f, line, col, _, _ in errors] == [("a.yaml", 11, 17), ("b.yaml", 11, 11)]
    assert all("VM 'vm-7' on connection 'vc' is claimed by policies 'p' and 'q'" in e[3] for e in errors)


def test_instance_uuids_are_compared_case_insensitively(tmp_path: Path) -> None:
    uuid = "50030000-0000-4000-8000-0000000001a1"
    first = POLICY + POLICY_REFS + f"  select:\n    instanceUuids: [{uuid}]\n"
    second = POLICY.replace("name: p", "name: q") + POLICY_REFS + f"  select:\n    instanceUuids: [{uuid.upper()}]\n"
    errors = load_errors(tmp_path, {"base.yaml": BASE, "a.yaml": first, "b.yaml": second})
    assert len(errors) == 2


def test_the_same_vm_id_on_different_connections_is_fine(tmp_path: Path) -> None:
    other = BASE.split("---")[0].replace("name: vc", "name: esx")
    first = POLICY + POLICY_REFS + "  select:\n    ids: ['12']\n"
    second = POLICY.replace("name: p", "name: q") + POLICY_REFS.replace("connection: vc", "connection: esx")
    second += "  select:\n    ids: ['12']\n"
    files = {"base.yaml": BASE, "esx.yaml": other, "a.yaml": first, "b.yaml": second}
    assert load_errors(tmp_path, files) == []


def test_an_unterminated_flow_sequence_hints_where_it_started(tmp_path: Path) -> None:
    [error] = load_errors(tmp_path, {"case.yaml": DOC + "  keepLast: [1, 2\n"})
    assert error[1:] == (
        7,
        1,
        "YAML syntax error: expected ',' or ']', but got '<stream end>'",
        "while parsing a flow sequence that starts at line 6, column 13",
    )


def test_every_error_of_every_file_is_reported_sorted(tmp_path: Path) -> None:
    errors = load_errors(
        tmp_path, {"b.yaml": DOC + "  keepLst: 3\n  daily: x\n", "a.yaml": "a: [\n", "c.yaml": "\tx: 1\n"}
    )
    assert [(f, line) for f, line, *_ in errors] == [("a.yaml", 2), ("b.yaml", 6), ("b.yaml", 7), ("c.yaml", 1)]


@pytest.mark.timeout(20)
def test_a_huge_file_is_refused_unread(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, {"case.yaml": "# " + "x" * (1024 * 1024) + "\n"})
    assert errors == [
        (
            "case.yaml",
            1,
            1,
            "file too large: more than 1048576 bytes",
            "split it into several files, or raise the limit with --max-file-size",
        )
    ]


def test_invalid_utf8_is_reported_at_the_bad_byte(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, {"case.yaml": b"apiVersion: reconciler/v1\nkind: R\xc3\xa9t\xffention\n"})
    assert errors == [("case.yaml", 2, 10, "invalid UTF-8 (byte 0xff)", "save the file as UTF-8")]


def test_a_nul_byte_is_reported_at_its_place(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, {"case.yaml": b"apiVersion: reconciler/v1\nki\x00nd: x\n"})
    assert [e[:4] for e in errors] == [("case.yaml", 2, 3, "NUL byte in file: is this a binary file?")]


@pytest.mark.timeout(20)
def test_a_fifo_in_a_policy_directory_is_reported_and_never_opened(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "pipe.yaml")  # opening it for reading would block forever
    errors = load_errors(tmp_path, {"base.yaml": BASE})
    assert [e[:4] for e in errors] == [("pipe.yaml", 1, 1, "a FIFO, not a policy file: skipped unread")]


@pytest.mark.timeout(20)
def test_a_symlink_loop_in_a_policy_directory_is_reported(tmp_path: Path) -> None:
    (tmp_path / "loop.yaml").symlink_to("loop.yaml")
    errors = load_errors(tmp_path, {"base.yaml": BASE})
    assert [e[:4] for e in errors] == [("loop.yaml", 1, 1, "symlink loop: skipped")]


@pytest.mark.timeout(20)
def test_a_directory_symlink_loop_is_walked_once(tmp_path: Path) -> None:
    (tmp_path / "again").symlink_to(".")
    assert load_errors(tmp_path, {"base.yaml": BASE}) == []


def test_a_missing_path_is_an_error(tmp_path: Path) -> None:
    from reconciler.policy import load

    result = load([tmp_path / "nope"])
    assert [(str(e.location), e.message) for e in result.errors] == [
        (f"{tmp_path / 'nope'}:1:1", "no such file or directory")
    ]


def test_a_directory_without_policy_files_is_an_error(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, {"notes.txt": "hello"})
    assert [e[3] for e in errors] == ["no policy files (*.yaml, *.yml, *.yaml.j2) here"]
