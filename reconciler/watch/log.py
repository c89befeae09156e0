"""Structured logs for a long-running service: one line per event, as text for people or JSON for
machines (`--log-format json`), on stderr so journald records them. Never a secret: fields whose name
says secret are masked, and credentials embedded in URLs or `key=value` text are masked too."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import IO, Any


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


MASK = "***"
_SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|cookie|credential|api[_-]?key|authorization", re.I)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^/\s:@]+):(?P<pw>[^/\s@]+)@", re.I)
_KEY_VALUE = re.compile(r"(?P<key>\b\w*(?:password|passwd|secret|token|cookie)\w*\b\s*[=:]\s*)(?P<value>[^\s,;]+)",
                        re.I)


def redact_text(text: str) -> str:
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _KEY_VALUE.sub(lambda m: f"{m['key']}{MASK}", text)


def redact(value: Any, key: str = "") -> Any:
    if key and _SECRET_KEY.search(key):
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {str(k): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    return value


class Log:
    def __init__(self, stream: IO[str], fmt: LogFormat = LogFormat.TEXT,
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.stream, self.fmt, self._now = stream, fmt, now
        self._lock = threading.Lock()

    def info(self, event: str, **fields: Any) -> None:
        self.write("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.write("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self.write("error", event, fields)

    def write(self, level: str, event: str, fields: Mapping[str, Any]) -> None:
        clean = {k: v for k, v in redact(dict(fields)).items() if v is not None}
        at = self._now().astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if self.fmt is LogFormat.JSON:
            line = json.dumps({"ts": at, "level": level, "event": event} | clean, ensure_ascii=False,
                              separators=(",", ":"), default=_json_value)
        else:
            line = " ".join([at, level.upper(), event, *(f"{k}={_text(v)}" for k, v in clean.items())])
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


def _json_value(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return str(value)


def _text(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return _json_value(value)
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if (not text or any(c.isspace() or c == '"' for c in text)) else text
