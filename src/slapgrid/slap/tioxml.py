"""The TioXML usage format: what a node sends to `useComputer` and the master accepts.

Two documents, each with its schema beside this module: the `<consumption>` an instance
writes for itself (`partition_consumption.xsd`) and the `<journal>` a node sends
(`computer_consumption.xsd`). Node and master validate with the same code, so a journal the
node builds is one the master takes. Pure: bytes in, elements or text out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources

from lxml import etree

from slapgrid.errors import SlapgridError
from slapgrid.slap.errors import ProtocolError
from slapgrid.slap.marshal import parse_xml

MAX_USAGE_FILE_BYTES = 1 << 20
"""Bound on one document an instance writes: the node reads these from untrusted disk."""


class InvalidUsage(SlapgridError):
    """A usage document, or the journal built from them, does not match its schema."""


@dataclass(frozen=True)
class Movement:
    """One `<movement>`: a quantity of one resource used by one partition."""

    resource: str
    quantity: str  # xs:float, as text: instance-written values are passed on unchanged
    reference: str | None = None  # the partition id once attributed
    title: str | None = None
    price: str = "0.00"
    vat: str = "None"
    categories: tuple[str, ...] = ()


@cache
def _schema(name: str) -> etree.XMLSchema:
    data = resources.files(__package__).joinpath(name).read_bytes()
    return etree.XMLSchema(etree.fromstring(data))


def partition_schema() -> etree.XMLSchema:
    return _schema("partition_consumption.xsd")


def computer_schema() -> etree.XMLSchema:
    return _schema("computer_consumption.xsd")


def _check(root: etree._Element, schema: etree.XMLSchema, what: str) -> etree._Element:
    """`root` if `schema` accepts it; else `InvalidUsage` naming the first problem's line."""
    if not schema.validate(root):
        error = schema.error_log.last_error
        detail = f"line {error.line}: {error.message}" if error else "schema mismatch"
        raise InvalidUsage(f"{what} is invalid: {detail}")
    return root


def _validated(
    data: bytes | str, schema: etree.XMLSchema, what: str, max_bytes: int
) -> etree._Element:
    try:
        root = parse_xml(data, what=what, max_bytes=max_bytes)
    except ProtocolError as exc:
        raise InvalidUsage(str(exc)) from None
    return _check(root, schema, what)


def parse_consumption(
    data: bytes | str, partition_id: str, what: str = "usage report"
) -> list[Movement]:
    """The movements of a `<consumption>` document, attributed to `partition_id`.

    The instance's own `<reference>` is replaced: a partition can only report for itself.
    """
    root = _validated(data, partition_schema(), what, MAX_USAGE_FILE_BYTES)
    movements = []
    for element in root.iterchildren("movement"):
        texts = {child.tag: (child.text or "") for child in element.iterchildren(tag=etree.Element)}
        movements.append(
            Movement(
                resource=texts["resource"],
                quantity=texts["quantity"].strip(),
                reference=partition_id,
                title=texts.get("title"),
                price=texts["price"].strip(),
                vat=texts["VAT"],
                categories=tuple(c.text or "" for c in element.iterchildren("category")),
            )
        )
    return movements


def parse_journal(
    data: bytes | str,
    what: str = "computer usage report",
    *,
    max_bytes: int = MAX_USAGE_FILE_BYTES,
) -> etree._Element:
    """A validated `<journal>`: a ready one an instance wrote, or one a node sent (the
    master passes its own bound for a request)."""
    return _validated(data, computer_schema(), what, max_bytes)


def _child(parent: etree._Element, tag: str, text: str | None = "") -> etree._Element:
    element = etree.SubElement(parent, tag)
    element.text = text
    return element


def _movement(parent: etree._Element, movement: Movement) -> None:
    element = etree.SubElement(parent, "movement")
    _child(element, "resource", movement.resource)
    if movement.title is not None:
        _child(element, "title", movement.title)
    if movement.reference is not None:
        _child(element, "reference", movement.reference)
    _child(element, "quantity", movement.quantity)
    _child(element, "price", movement.price)
    _child(element, "VAT", movement.vat)
    for category in movement.categories:
        _child(element, "category", category)


def build_journal(
    computer_id: str,
    movements: Iterable[Movement],
    *,
    stop_date: datetime,
    journals: Iterable[bytes | str] = (),
) -> str:
    """One TioXML journal, on one line: a `Sale Packing List` transaction holding
    `movements`, followed by the transactions of the ready computer-level `journals`.

    Text is escaped by lxml; the result is validated and `InvalidUsage` names the problem.
    """
    journal = etree.Element("journal")
    movements = list(movements)
    try:
        if movements:
            transaction = etree.SubElement(journal, "transaction", type="Sale Packing List")
            _child(transaction, "title", "Resource consumptions")
            _child(transaction, "start_date")
            _child(transaction, "stop_date", stop_date.strftime("%Y-%m-%d at %H:%M:%S"))
            _child(transaction, "reference", computer_id)
            for tag in ("currency", "payment_mode", "category"):
                _child(transaction, tag)
            arrow = etree.SubElement(transaction, "arrow", type="Administration")
            _child(arrow, "source")
            _child(arrow, "destination")
            for movement in movements:
                _movement(transaction, movement)
        for document in journals:
            journal.extend(parse_journal(document).iterchildren("transaction"))
    except ValueError as exc:  # a character XML cannot carry
        raise InvalidUsage(f"usage journal cannot be written: {exc}") from None
    _check(journal, computer_schema(), "usage journal")
    return '<?xml version="1.0"?>' + etree.tostring(journal, encoding="unicode")
