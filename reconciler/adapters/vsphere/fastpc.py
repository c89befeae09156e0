"""The inventory retrieval on the wire: RetrievePropertiesEx as plain SOAP, parsed with lxml.

pyVmomi builds a typed object for every element of a response, in Python; for a 10,000-VM vCenter that
is most of the cost of a plan (measured: 7.1 s of 9 s for 2,000 VMs, where the server needed 1.9 s and
lxml parses the same bytes in 0.5 s). This module sends the same PropertyCollector request pyVmomi would
and turns the answer into light read-only objects that `parse.py` reads like pyVmomi objects
(attribute access, `_moId` on references). Everything else — logins, tasks, snapshots — stays pyVmomi.
"""

from __future__ import annotations

import datetime as dt
import http.client
from collections.abc import Iterable, Iterator
from typing import Any
from xml.sax.saxutils import escape

from lxml import etree
from pyVmomi import vim

from reconciler.adapters.vsphere.session import (
    PinnedHTTPSConnection,
    VsphereError,
    VsphereSession,
    unverified_context,
)

XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
PAGE_SIZE = 1000
# fields that are numbers or times inside data objects (top-level values carry an xsi:type instead)
_INT_FIELDS = frozenset({"key", "capacityInBytes", "capacityInKB", "speedMb", "controllerKey", "unitNumber"})
_TIME_FIELDS = frozenset({"createTime"})
# the only device the planner reads; the others are most of the bytes and are not converted
_KEPT_DEVICE = "VirtualDisk"


class MoRef:
    """A managed object reference as `parse.moref_id` reads it."""

    __slots__ = ("_moId", "_type")

    def __init__(self, kind: str, value: str) -> None:
        self._type = kind
        self._moId = value

    def __repr__(self) -> str:
        return f"vim.{self._type}:{self._moId}"


class DataObject:
    """A vSphere data object: its wire type name and its fields as attributes (absent → None)."""

    def __init__(self, wire_type: str, fields: dict[str, Any]) -> None:
        self.wire_type = wire_type
        self.__dict__.update(fields)

    def __getattr__(self, name: str) -> Any:  # only called for fields the server left out
        if name.startswith("__"):
            raise AttributeError(name)
        return None


def wire_type(value: Any) -> str:
    """`VirtualDisk` for a DataObject or a pyVmomi `vim.vm.device.VirtualDisk`."""
    if isinstance(value, DataObject):
        return value.wire_type
    return type(value).__name__.rsplit(".", 1)[-1]


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _simple(text: str | None, xsi: str) -> Any:
    text = text or ""
    kind = xsi.rpartition(":")[2]
    if kind == "boolean":
        return text == "true"
    if kind in ("int", "long", "short", "byte"):
        return int(text)
    if kind == "dateTime":
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return text


def convert(element: etree._Element) -> Any:
    xsi = element.get(XSI_TYPE) or ""
    if xsi == "ManagedObjectReference" or (element.get("type") and len(element) == 0 and not xsi.startswith("xsd")):
        return MoRef(element.get("type") or "", element.text or "")
    if xsi.startswith("ArrayOf"):
        if xsi == "ArrayOfVirtualDevice":  # only disks matter; the other devices are most of the bytes
            return [convert(child) for child in element if child.get(XSI_TYPE) == _KEPT_DEVICE]
        return [convert(child) for child in element]
    if len(element) == 0:  # xsd types, enums (VirtualMachinePowerState…), empty strings
        return _simple(element.text, xsi)
    return _data_object(element, xsi)


def _data_object(element: etree._Element, xsi: str) -> DataObject:
    fields: dict[str, Any] = {}
    repeated: set[str] = set()
    for child in element:
        name = _local(child.tag)
        if name == "dynamicProperty":
            continue
        if len(child) == 0 and not child.get(XSI_TYPE) and not child.get("type"):
            text = child.text or ""
            if name in _INT_FIELDS and text.lstrip("-").isdigit():
                value: Any = int(text)
            elif name in _TIME_FIELDS:
                value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            else:
                value = text
        else:
            value = convert(child)
        if name not in fields:
            fields[name] = value
            continue
        if name not in repeated:  # a repeated element is an array field
            fields[name] = [fields[name]]
            repeated.add(name)
        fields[name].append(value)
    return DataObject(_local(xsi) if xsi else _local(element.tag), fields)


def as_list(value: Any) -> list[Any]:
    """An array field of a data object: the wire cannot tell a one-element array from a value."""
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _filter_spec(view: str, kinds: dict[str, Iterable[str]]) -> str:
    prop_sets = "".join(
        f"<propSet><type>{kind}</type><all>false</all>"
        + "".join(f"<pathSet>{escape(path)}</pathSet>" for path in paths)
        + "</propSet>"
        for kind, paths in kinds.items()
    )
    return (
        f"<specSet>{prop_sets}<objectSet><obj type=\"ContainerView\">{escape(view)}</obj><skip>true</skip>"
        "<selectSet xsi:type=\"TraversalSpec\"><name>view</name><type>ContainerView</type><path>view</path>"
        "<skip>false</skip></selectSet></objectSet></specSet>"
    )


def _envelope(body: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
        'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">'
        f"<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
    ).encode()


class _Wire:
    """One keep-alive HTTP(S) connection that posts SOAP bodies with the session's cookie."""

    def __init__(self, session: VsphereSession, si: vim.ServiceInstance) -> None:
        ep = session.endpoint
        self.conn: http.client.HTTPConnection
        if ep.scheme == "https" and session.thumbprint is not None:
            # this is a connection of its own, not the one login pinned: it must pin again, before the cookie
            self.conn = PinnedHTTPSConnection(ep, session.thumbprint, timeout=300)
        elif ep.scheme == "https":  # the Connection was explicitly made insecure, as its login was
            self.conn = http.client.HTTPSConnection(ep.host, ep.port, context=unverified_context(), timeout=300)
        else:
            self.conn = http.client.HTTPConnection(ep.host, ep.port, timeout=300)
        self.path = ep.path
        self.cookie = si._stub.cookie
        self.version = si._stub.versionId.strip('"') if si._stub.versionId else "urn:vim25"
        self.collector = si.content.propertyCollector._moId

    def call(self, body: str) -> etree._Element:
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{self.version}"', "Cookie": self.cookie}
        self.conn.request("POST", self.path, body=_envelope(body), headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        root = etree.fromstring(data, parser=etree.XMLParser(huge_tree=True, resolve_entities=False))
        body_el = next(iter(root.iterfind("{http://schemas.xmlsoap.org/soap/envelope/}Body")))
        result = body_el[0]
        if _local(result.tag) == "Fault":
            detail = result.find("detail")
            fault = _local(detail[0].tag) if detail is not None and len(detail) else ""
            message = result.findtext("faultstring") or "SOAP fault"
            if fault.startswith("NotAuthenticated"):
                raise vim.fault.NotAuthenticated(msg=message)
            raise VsphereError(f"RetrievePropertiesEx: {fault or 'fault'}: {message}")
        return result

    def close(self) -> None:
        self.conn.close()


def _objects(result: etree._Element) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for returnval in result:
        for obj in returnval:
            tag = _local(obj.tag)
            if tag != "objects":
                continue
            ref = obj.find("{urn:vim25}obj")
            if ref is None:
                ref = obj.find("obj")
            props: dict[str, Any] = {}
            for prop in obj:
                if _local(prop.tag) != "propSet":
                    continue
                name = val = None
                for child in prop:
                    local = _local(child.tag)
                    if local == "name":
                        name = child.text
                    elif local == "val":
                        val = child
                if name is not None and val is not None:
                    props[name] = convert(val)
            yield ref.get("type") or "", ref.text or "", props


def _token(result: etree._Element) -> str | None:
    for returnval in result:
        for child in returnval:
            if _local(child.tag) == "token":
                return child.text
    return None


def retrieve(si: vim.ServiceInstance, session: VsphereSession, kinds: dict[str, Iterable[str]]
             ) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, moref, properties) of every object of `kinds` (wire type names) below the root folder."""
    content = si.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [getattr(vim, k) for k in kinds], True)
    wire = _Wire(session, si)
    try:
        this = f'<_this type="PropertyCollector">{escape(wire.collector)}</_this>'
        result = wire.call(
            f'<RetrievePropertiesEx xmlns="urn:vim25">{this}{_filter_spec(view._moId, kinds)}'
            f"<options><maxObjects>{PAGE_SIZE}</maxObjects></options></RetrievePropertiesEx>"
        )
        objects = list(_objects(result))
        while token := _token(result):
            result = wire.call(
                f'<ContinueRetrievePropertiesEx xmlns="urn:vim25">{this}<token>{escape(token)}</token>'
                "</ContinueRetrievePropertiesEx>"
            )
            objects.extend(_objects(result))
        return objects
    finally:
        wire.close()
        view.Destroy()
