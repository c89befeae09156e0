"""Names for the things a plan talks about. Identity is the instanceUuid; the rest is display/address."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class VmRef:
    """A VM as a plan names it: `instance_uuid` identifies it, `id` (MoRefID or vmID) only addresses it."""

    instance_uuid: str
    name: str = ""
    id: str = ""
    connection: str = ""

    def to_json(self) -> dict[str, str]:
        return {"instanceUuid": self.instance_uuid, "name": self.name, "id": self.id,
                "connection": self.connection}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> VmRef:
        return cls(data["instanceUuid"], data.get("name", ""), data.get("id", ""), data.get("connection", ""))
