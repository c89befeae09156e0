"""Structured logs: text or JSON lines, and never a secret."""

from __future__ import annotations

import datetime as dt
import io
import json

from reconciler.watch.log import MASK, Log, LogFormat, redact, redact_text

AT = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)


def test_json_lines_carry_time_level_event_and_fields() -> None:
    out = io.StringIO()
    Log(out, LogFormat.JSON, now=lambda: AT).info("plan.ready", changes=3, until=AT)
    record = json.loads(out.getvalue())
    assert record == {"ts": "2026-03-10T12:00:00.000Z", "level": "info", "event": "plan.ready", "changes": 3,
                      "until": "2026-03-10T12:00:00Z"}


def test_text_lines_quote_values_with_spaces() -> None:
    out = io.StringIO()
    Log(out, LogFormat.TEXT, now=lambda: AT).warning("apply.locked", detail="another apply runs", n=1)
    assert out.getvalue() == '2026-03-10T12:00:00.000Z WARNING apply.locked detail="another apply runs" n=1\n'


def test_fields_named_like_secrets_are_masked_at_any_depth() -> None:
    assert redact({"password": "hunter2", "nested": {"apiToken": "t", "ok": "v"}, "cookie": "c"}) == {
        "password": MASK, "nested": {"apiToken": MASK, "ok": "v"}, "cookie": MASK}


def test_credentials_inside_messages_and_urls_are_masked() -> None:
    assert redact_text("GET https://admin:s3cret@vc.lab/sdk failed") == f"GET https://admin:{MASK}@vc.lab/sdk failed"
    assert redact_text("login failed: password=hunter2, user=root") == f"login failed: password={MASK}, user=root"
    assert redact_text('vmware_soap_session_cookie: "abc123"') == f"vmware_soap_session_cookie: {MASK}"


def test_a_logged_error_never_shows_the_password() -> None:
    out = io.StringIO()
    Log(out, LogFormat.JSON).error("cycle.failed", error="https://u:hunter2@h/sdk: refused", password="hunter2")
    assert "hunter2" not in out.getvalue()
