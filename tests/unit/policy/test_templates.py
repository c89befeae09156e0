"""`*.yaml.j2` templates: sandboxed, strict, bounded, and their errors point at the template line."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.policy import load
from tests.unit.policy.helpers import BASE, load_errors, write

TEMPLATE = """\
# one retention per client
{% for client in clients %}
---
apiVersion: reconciler/v1
kind: Retention
metadata:
  name: {{ client.name }}
spec:
  keepLast: {{ client.keep }}
{% endfor %}
"""
VARS = "clients:\n  - {name: acme, keep: 3}\n  - {name: globex, keep: 5}\n"


def test_a_template_renders_one_document_per_loop_iteration_with_vars_from_beside_it(tmp_path: Path) -> None:
    write(tmp_path, {"r.yaml.j2": TEMPLATE, "clients.vars.yaml": VARS})
    result = load([tmp_path], environ={})
    assert result.errors == ()
    assert {name: r.keep_last for name, r in result.policy_set.retentions.items()} == {"acme": 3, "globex": 5}


def test_a_template_given_alone_still_reads_the_vars_files_beside_it(tmp_path: Path) -> None:
    write(tmp_path, {"r.yaml.j2": TEMPLATE, "clients.vars.yaml": VARS})
    result = load([tmp_path / "r.yaml.j2"], environ={})
    assert sorted(result.policy_set.retentions) == ["acme", "globex"]


def test_documents_from_a_template_carry_the_template_line(tmp_path: Path) -> None:
    write(tmp_path, {"r.yaml.j2": TEMPLATE, "clients.vars.yaml": VARS})
    retention = load([tmp_path], environ={}).policy_set.retentions["globex"]
    assert (Path(retention.location.file).name, retention.location.line) == ("r.yaml.j2", 4)


def test_a_schema_error_in_rendered_output_points_at_the_template_line(tmp_path: Path) -> None:
    bad_vars = "clients:\n  - {name: acme, keep: 3}\n  - {name: globex, keep: 0}\n"
    errors = load_errors(tmp_path, {"r.yaml.j2": TEMPLATE, "clients.vars.yaml": bad_vars})
    assert [e[:4] for e in errors] == [("r.yaml.j2", 9, 13, "spec.keepLast must be at least 1, not 0")]


def test_a_yaml_error_in_rendered_output_points_at_the_template_line(tmp_path: Path) -> None:
    bad_vars = "clients:\n  - {name: 'acme: x', keep: 3}\n"
    errors = load_errors(tmp_path, {"r.yaml.j2": TEMPLATE, "clients.vars.yaml": bad_vars})
    assert [e[:2] for e in errors] == [("r.yaml.j2", 7)]
    assert errors[0][3].startswith("YAML syntax error")


def test_an_undefined_variable_is_an_error_at_its_place_with_a_hint(tmp_path: Path) -> None:
    template = TEMPLATE.replace("client.keep", "client.keep + extra")
    write(tmp_path, {"r.yaml.j2": template, "clients.vars.yaml": VARS + "extras: 1\n"})
    errors = load_errors(tmp_path, {})
    assert errors == [("r.yaml.j2", 9, 30, "undefined template variable 'extra'", "did you mean 'extras'?")]


def test_a_template_syntax_error_is_reported_at_its_line(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, {"r.yaml.j2": "a: 1\n{% for x in %}\n{% endfor %}\n"})
    assert [e[:3] for e in errors] == [("r.yaml.j2", 2, 1)]
    assert errors[0][3].startswith("template syntax error")


@pytest.mark.parametrize(
    "escape",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.system('touch MARKER') }}",
        "{{ lipsum.__globals__['os'].system('touch MARKER') }}",
        "{{ self._TemplateReference__context }}",
        "{% set x = [] %}{{ x.append('touch MARKER') }}",
    ],
)
def test_sandbox_escapes_are_refused_at_the_template_line(tmp_path: Path, escape: str) -> None:
    marker = tmp_path / "executed"
    errors = load_errors(tmp_path, {"r.yaml.j2": "# header\nx: " + escape.replace("MARKER", str(marker)) + "\n"})
    assert [e[:2] for e in errors] == [("r.yaml.j2", 2)]
    assert errors[0][3].startswith("the template sandbox refused")
    assert not marker.exists()


def test_an_environment_variable_not_on_the_allow_list_is_an_error(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, {"r.yaml.j2": "a: 1\nb: {{ env.SECRET }}\n"}, environ={"SECRET": "s3cret"})
    assert errors == [
        (
            "r.yaml.j2",
            2,
            11,
            "environment variable 'SECRET' is not on the allow-list",
            "the operator can allow it: RECONCILER_TEMPLATE_ENV=SECRET (comma-separated names)",
        )
    ]


def test_an_allow_listed_environment_variable_is_readable(tmp_path: Path) -> None:
    template = TEMPLATE.replace("{{ client.name }}", "{{ env.PREFIX }}-{{ client.name }}")
    write(tmp_path, {"r.yaml.j2": template, "clients.vars.yaml": VARS})
    environ = {"RECONCILER_TEMPLATE_ENV": "PREFIX, OTHER", "PREFIX": "eu"}
    assert sorted(load([tmp_path], environ=environ).policy_set.retentions) == ["eu-acme", "eu-globex"]


def test_an_allowed_but_unset_environment_variable_is_an_error(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, {"r.yaml.j2": "b: {{ env.PREFIX }}\n"}, {"RECONCILER_TEMPLATE_ENV": "PREFIX"})
    assert [e[:4] for e in errors] == [("r.yaml.j2", 1, 11, "environment variable 'PREFIX' is allowed but not set")]


@pytest.mark.timeout(30)
def test_loops_are_bounded(tmp_path: Path) -> None:
    template = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}\n"
    errors = load_errors(tmp_path, {"r.yaml.j2": template})
    assert [e[:4] for e in errors] == [("r.yaml.j2", 1, 1, "template loops ran more than 100000 times")]


@pytest.mark.timeout(30)
def test_output_size_is_bounded(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, {"r.yaml.j2": "{{ 'x' * 100000000 }}\n"})
    assert [e[:4] for e in errors] == [("r.yaml.j2", 1, 1, "template builds a value larger than the output limit")]
    errors = load_errors(tmp_path, {"r.yaml.j2": "{% for i in range(99999) %}{{ 'y' * 100 }}{% endfor %}\n"})
    assert [e[3] for e in errors] == ["template output is larger than 1048576 characters"]


def test_a_variable_defined_in_two_vars_files_is_an_error(tmp_path: Path) -> None:
    files = {"a.vars.yaml": "x: 1\n", "b.vars.yaml": "y: 2\nx: 3\n", "base.yaml": BASE}
    errors = load_errors(tmp_path, files)
    assert [e[:4] for e in errors] == [("b.vars.yaml", 2, 1, "variable 'x' is defined twice")]


def test_a_vars_file_must_be_a_mapping(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, {"a.vars.yaml": "- 1\n", "base.yaml": BASE})
    assert [e[:4] for e in errors] == [
        ("a.vars.yaml", 1, 1, "a vars file must be a mapping of variable names to values")
    ]


def test_vars_files_are_not_policies(tmp_path: Path) -> None:
    write(tmp_path, {"a.vars.yaml": "kind: x\n", "b.yaml": BASE})
    result = load([tmp_path], environ={})
    assert result.errors == ()
    assert result.documents == 5


@pytest.mark.parametrize("tag", ["{% include '/etc/passwd' %}", "{% import '/etc/passwd' as x %}", "{% extends 'x' %}"])
def test_templates_cannot_read_other_files(tmp_path: Path, tag: str) -> None:
    errors = load_errors(tmp_path, {"r.yaml.j2": "a: 1\n" + tag + "\n"})
    assert [e[:2] for e in errors] == [("r.yaml.j2", 2)]
    assert errors[0][3] == "template error: no loader for this environment specified"
