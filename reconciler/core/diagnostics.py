"""Diagnostics: what the plan must tell the operator, with stable codes (scripts and docs key on them)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from reconciler.core.refs import VmRef
from reconciler.policy.model import Location


class Severity(StrEnum):
    ERROR = "error"  # something cannot be done until a human acts
    WARNING = "warning"  # it runs, but worse than it should
    INFO = "info"


class Code(StrEnum):
    ENCRYPTED_VM = "encrypted-vm"
    UNSUPPORTED_LICENSE = "unsupported-license"
    HW_VERSION_BELOW_7 = "hw-version-below-7"
    TOOLS_NOT_RUNNING = "tools-not-running"
    CBT_RESET = "cbt-reset"
    VM_NOT_FOUND = "vm-not-found"
    CONSOLIDATION_NEEDED = "consolidation-needed"
    EXCLUDED_VOLUME = "excluded-volume"
    UNSUPPORTED_VOLUME = "unsupported-volume"
    POLICY_CONFLICT = "policy-conflict"
    POLICY_INVALID = "policy-invalid"
    CONNECTION_FAILED = "connection-failed"
    THUMBPRINT_MISMATCH = "thumbprint-mismatch"
    UNSUPPORTED_VSPHERE_VERSION = "unsupported-vsphere-version"
    NBD_LARGE_DISK = "nbd-large-disk"
    FOREIGN_SNAPSHOT = "foreign-snapshot"
    MASS_PRUNE_REFUSED = "mass-prune-refused"
    REPOSITORY_UNREACHABLE = "repository-unreachable"
    REPLICA_TARGET_UNREACHABLE = "replica-target-unreachable"
    REPLICA_HOST_KEY_MISMATCH = "replica-host-key-mismatch"
    REPLICA_DIVERGED = "replica-diverged"
    REPLICA_BASE_LOST = "replica-base-lost"


@dataclass(frozen=True, order=True)
class Diagnostic:
    code: Code
    severity: Severity
    message: str
    vm: VmRef | None = None
    disk: int | None = None
    location: Location | None = None

    def sort_key(self) -> tuple[Any, ...]:
        vm = self.vm.instance_uuid if self.vm else ""
        return (_SEVERITY_RANK[self.severity], self.code.value, vm, self.disk or -1, self.message)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"code": self.code.value, "severity": self.severity.value,
                                "message": self.message}
        if self.vm is not None:
            data["vm"] = self.vm.to_json()
        if self.disk is not None:
            data["disk"] = self.disk
        if self.location is not None:
            data["location"] = {"file": self.location.file, "line": self.location.line,
                                "col": self.location.col}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Diagnostic:
        loc = data.get("location")
        return cls(
            code=Code(data["code"]),
            severity=Severity(data["severity"]),
            message=data["message"],
            vm=VmRef.from_json(data["vm"]) if "vm" in data else None,
            disk=data.get("disk"),
            location=Location(loc["file"], loc["line"], loc["col"]) if loc else None,
        )


_SEVERITY_RANK = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
