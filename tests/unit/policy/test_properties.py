"""Properties: every valid model survives dump → load, and `fmt` is idempotent and keeps every comment."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.policy import dump_policies, load_policies
from reconciler.policy.dump import policy_documents
from reconciler.policy.formatting import canonical_yaml, format_text
from reconciler.policy.model import PolicySet
from tests.unit.policy.strategies import policy_sets

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _load_text(text: str) -> PolicySet:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "policies.yaml"
        path.write_text(text, encoding="utf-8")
        return load_policies([path], environ={})


@SETTINGS
@given(policy_sets())
def test_every_valid_model_serialises_and_revalidates_to_the_same_model(policy_set: PolicySet) -> None:
    assert _load_text(dump_policies(policy_set)) == policy_set


@st.composite
def messy_policy_text(draw: st.DrawFn) -> tuple[PolicySet, str, list[str]]:
    """A valid policy file laid out in some non-canonical way, with comments sprinkled in."""
    policy_set = draw(policy_sets())
    yaml = canonical_yaml()
    mapping = draw(st.integers(2, 4))
    sequence = draw(st.integers(mapping, mapping + 2))
    # ruamel emits broken YAML unless offset <= sequence - 2
    yaml.indent(mapping=mapping, sequence=sequence, offset=draw(st.integers(0, sequence - 2)))
    yaml.explicit_start = draw(st.booleans())
    stream = io.StringIO()
    yaml.dump_all(policy_documents(policy_set), stream)
    lines = stream.getvalue().splitlines()
    comments: list[str] = []
    out: list[str] = []
    for number, line in enumerate(lines):
        if draw(st.integers(0, 5)) == 0:
            comments.append(f"# note {number}")
            out.append(" " * draw(st.integers(0, 4)) + comments[-1])
        if draw(st.integers(0, 4)) == 0 and line.strip() not in ("---", ""):
            comments.append(f"# tail {number}")
            line = f"{line}  {comments[-1]}"
        out.append(line)
    return policy_set, "\n".join(out) + "\n", comments


@SETTINGS
@given(messy_policy_text())
def test_fmt_is_idempotent_keeps_every_comment_and_changes_no_meaning(case: tuple[PolicySet, str, list[str]]) -> None:
    policy_set, messy, comments = case
    formatted = format_text(messy)
    assert format_text(formatted) == formatted
    for comment in comments:
        assert comment in formatted
    assert _load_text(formatted) == policy_set


def test_fmt_keeps_the_schema_comment_on_top_and_indents_sequences_under_their_key() -> None:
    messy = (
        "# yaml-language-server: $schema=../schemas/reconciler-v1.schema.json\n"
        "apiVersion: reconciler/v1\nkind: Schedule\nmetadata:\n    name: s\nspec:\n    rules:\n    -   every: 1h\n"
    )
    assert format_text(messy) == (
        "# yaml-language-server: $schema=../schemas/reconciler-v1.schema.json\n"
        "apiVersion: reconciler/v1\nkind: Schedule\nmetadata:\n  name: s\nspec:\n  rules:\n    - every: 1h\n"
    )


def test_fmt_keeps_comments_above_a_leading_document_marker() -> None:
    messy = "# yaml-language-server: $schema=x.json\n# about\n--- # first\na: 1\n---\nb: 2\n"
    assert format_text(messy) == "# yaml-language-server: $schema=x.json\n# about\n# first\na: 1\n---\nb: 2\n"


def test_fmt_leaves_a_file_of_only_comments_alone() -> None:
    assert format_text("# nothing yet\n") == "# nothing yet\n"


_WORDS = [
    "apiVersion",
    "kind",
    "metadata",
    "spec",
    "name",
    "Connection",
    "ProtectionPolicy",
    "Schedule",
    "Retention",
    "Repository",
    "reconciler/v1",
    "select",
    "rules",
    "every",
    "ids",
    "passwordFrom",
    "env",
    "address",
    "thumbprint",
    "insecure",
    "keepLast",
    "window",
    "cron",
    "timezone",
    "connection",
    "x",
]
_junk = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from(_WORDS) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_WORDS), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(_WORDS), _junk, max_size=5), min_size=1, max_size=3))
def test_any_document_shape_gives_errors_never_an_exception(documents: list) -> None:
    import json

    from reconciler.policy import load

    text = "\n---\n".join(json.dumps(doc) for doc in documents)  # JSON is YAML
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "junk.yaml"
        path.write_text(text, encoding="utf-8")
        result = load([path], environ={})
    assert all(error.location.file == str(path) for error in result.errors)
