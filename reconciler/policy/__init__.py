"""The policy language: load, render (Jinja2 sandbox), validate (JSON Schema + cross-checks), dump.

Public API: `load_policies`, `PolicyInvalid`, `PolicyError`, `parse_duration`, `parse_window`,
`dump_policies`; `load` returns the errors and a summary instead of raising.
"""

from reconciler.policy.dump import dump_policies
from reconciler.policy.durations import format_duration, parse_duration, parse_window
from reconciler.policy.errors import PolicyError, PolicyInvalid
from reconciler.policy.load import LoadResult, load, load_policies

__all__ = [
    "LoadResult",
    "PolicyError",
    "PolicyInvalid",
    "dump_policies",
    "format_duration",
    "load",
    "load_policies",
    "parse_duration",
    "parse_window",
]
