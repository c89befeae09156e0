"""Rendering `*.yaml.j2` policy templates in a Jinja2 sandbox, with bounded loops and output.

Templates see the variables of the `*.vars.yaml` files in their directory, and `env.NAME` for
environment variables, but only those named in `RECONCILER_TEMPLATE_ENV` (comma-separated): the
operator, not the policy author, decides what a template may read. The rendered text keeps a map
from each output line back to the template line it came from, so later errors point at the template.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from reconciler.policy.errors import PolicyError
from reconciler.policy.model import Location
from reconciler.policy.schema import did_you_mean

ALLOW_ENV = "RECONCILER_TEMPLATE_ENV"
MAX_OUTPUT_CHARS = 1024 * 1024
MAX_LOOP_ITERATIONS = 100_000
MAX_EXPONENT = 1_000
_MARK = re.compile("\x1e(\\d+)\x1f")
_LEADING_MARKS = re.compile("^(?:\x1e\\d+\x1f)+")


class TemplateProblem(Exception):
    def __init__(self, errors: list[PolicyError]) -> None:
        super().__init__("\n".join(map(str, errors)))
        self.errors = errors


class _Refused(Exception):
    """A limit or an allow-list refused something; the message is for the user."""

    def __init__(self, message: str, hint: str | None = None, name: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint
        self.name = name


class _EnvVars:
    """`env.NAME` in templates: only allow-listed variables, each a clear error otherwise."""

    def __init__(self, environ: Mapping[str, str], allowed: frozenset[str]) -> None:
        self._environ = environ
        self._allowed = allowed

    def __getattr__(self, name: str) -> str:
        return self[name]

    def __getitem__(self, name: str) -> str:
        if name not in self._allowed:
            raise _Refused(
                f"environment variable {name!r} is not on the allow-list",
                f"the operator can allow it: {ALLOW_ENV}={name} (comma-separated names)",
                name,
            )
        if name not in self._environ:
            raise _Refused(f"environment variable {name!r} is allowed but not set", name=name)
        return self._environ[name]


class _Budget:
    def __init__(self) -> None:
        self.iterations = 0

    def bounded(self, iterable: Any) -> Any:
        for item in iterable:
            self.iterations += 1
            if self.iterations > MAX_LOOP_ITERATIONS:
                raise _Refused(f"template loops ran more than {MAX_LOOP_ITERATIONS} times")
            yield item


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise _Refused(f"exponent {right} is too large")
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(count, int)
                if sized and len(seq) * count > MAX_OUTPUT_CHARS:
                    raise _Refused("template builds a value larger than the output limit")
        return super().call_binop(context, operator, left, right)


def allowed_env(environ: Mapping[str, str]) -> frozenset[str]:
    return frozenset(n.strip() for n in re.split(r"[,\s]+", environ.get(ALLOW_ENV, "")) if n.strip())


def _instrument(tree: nodes.Template) -> None:
    """Mark each template line's literal text with its line number, and bound every for-loop."""
    for data in tree.find_all(nodes.TemplateData):
        line = data.lineno
        parts = data.data.split("\n")
        data.data = "\n".join(f"\x1e{line + i}\x1f{part}" for i, part in enumerate(parts))
    for loop in tree.find_all(nodes.For):
        loop.iter = nodes.Filter(loop.iter, "reconciler_bounded", [], [], None, None, lineno=loop.lineno)


def _split_marks(marked: str) -> tuple[str, list[int]]:
    """The rendered text without marks, and the template line of each output line."""
    lines_out, line_map, current = [], [], 1
    for raw in marked.split("\n"):
        leading = _LEADING_MARKS.match(raw)
        if leading:  # the line starts with literal text: the last of its leading marks is its own
            current = int(_MARK.findall(leading.group(0))[-1])
        line_map.append(current)  # else it continues a multi-line value: keep the previous line
        lines_out.append(_MARK.sub("", raw))
        marks = _MARK.findall(raw)
        if marks:
            current = int(marks[-1])
    return "\n".join(lines_out), line_map


def _template_line(exc: BaseException, path: str) -> int | None:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == path]
    return frames[-1].lineno if frames else None


def _column(source: str, line: int, name: str | None) -> int:
    lines = source.splitlines()
    if name and 0 < line <= len(lines):
        found = re.search(rf"\b{re.escape(name)}\b", lines[line - 1])
        if found:
            return found.start() + 1
    return 1


def render(
    path: str, source: str, variables: Mapping[str, Any], environ: Mapping[str, str]
) -> tuple[str, Callable[[int], int]]:
    """The rendered text and a function from a rendered line to its template line."""
    sandbox = _Sandbox(undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    budget = _Budget()
    sandbox.filters["reconciler_bounded"] = budget.bounded
    sandbox.globals["range"] = lambda *args: budget.bounded(range(*args))
    context = {**variables, "env": _EnvVars(environ, allowed_env(environ))}

    def fail(line: int, message: str, hint: str | None = None, name: str | None = None) -> TemplateProblem:
        return TemplateProblem([PolicyError(Location(path, line, _column(source, line, name)), message, hint)])

    try:
        tree = sandbox.parse(source, name=path, filename=path)
        _instrument(tree)
        code = sandbox.compile(tree, name=path, filename=path)
        template = sandbox.template_class.from_code(sandbox, code, sandbox.make_globals(None))
        chunks, size = [], 0
        for chunk in template.generate(**context):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS * 2:  # marks included; checked exactly below
                raise _Refused(f"template output is larger than {MAX_OUTPUT_CHARS} characters")
            chunks.append(chunk)
    except TemplateSyntaxError as exc:
        raise fail(exc.lineno or 1, f"template syntax error: {exc.message}") from None
    except UndefinedError as exc:
        line = _template_line(exc, path) or 1
        match = re.match(r"'(\w+)' is undefined", exc.message or "")
        if match:
            name = match.group(1)
            hint = did_you_mean(name, sorted(variables)) or "define it in a *.vars.yaml file beside the template"
            raise fail(line, f"undefined template variable {name!r}", hint, name) from None
        raise fail(line, f"undefined template value: {exc.message}") from None
    except SecurityError as exc:
        raise fail(_template_line(exc, path) or 1, f"the template sandbox refused: {exc}") from None
    except _Refused as exc:
        raise fail(_template_line(exc, path) or 1, str(exc), exc.hint, exc.name) from None
    except RecursionError as exc:
        raise fail(_template_line(exc, path) or 1, "template recursion too deep") from None
    except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError, AttributeError) as exc:
        raise fail(_template_line(exc, path) or 1, f"template error: {exc}") from None
    text, line_map = _split_marks("".join(chunks))
    if len(text) > MAX_OUTPUT_CHARS:
        raise fail(1, f"template output is larger than {MAX_OUTPUT_CHARS} characters")
    return text, lambda line: line_map[line - 1] if 0 < line <= len(line_map) else line_map[-1] if line_map else 1
