"""Who may make which call: the rules the route table names, one per kind of endpoint.

The caller is who its TLS client certificate says (`Caller.identity`), never a parameter or
a header. A rule compares that identity with what the call names, before the call touches
the store, so a refused call changes nothing:

- a computer reads and reports on itself, its partitions and its releases;
- a partition acts on itself: reads its own documents, publishes, requests in its own tree,
  with the certificate issued for the instance it holds now (`credentials`);
- a user supplies, requests, and sees the instance trees it requested (`Caller.owner`);
- computers and users upload to the networkcache, every certificate downloads from it.

A master started `--insecure` (plain HTTP on loopback) has no identities: every caller is
`TRUSTED`, and who requests is what the call says, as with the reference's proxy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from slapgrid.master.errors import BadRequest, Forbidden
from slapgrid.master.params import Params
from slapgrid.master.pki.identity import (
    COMPUTER,
    PARTITION,
    USER,
    Identity,
    IdentityError,
    identity_from_peercert,
)


@dataclass(frozen=True)
class Caller:
    """Who is calling: a verified identity, nobody (no certificate), or `TRUSTED`."""

    identity: Identity | None = None
    trusted: bool = False
    refused: str | None = None  # why a presented certificate names no identity
    serial: str | None = None  # the certificate's, as hex: a partition's must be current

    @property
    def partition(self) -> bool:
        """A partition: its certificate is good only for the instance it was issued for."""
        return self.identity is not None and self.identity.kind == PARTITION

    @property
    def owner(self) -> str | None:
        """The user whose instance trees this caller sees and changes; None: all of them."""
        return self.identity.user if self.identity and self.identity.kind == USER else None

    def requester(self, p: Params, authorization: str = "") -> tuple[str, str] | None:
        """The (computer, partition) requesting an instance; None for a user's root.

        A partition is its certificate and a user never a partition; a computer names one of
        its partitions in the form. A trusted caller's claim (the reference client's
        `Authorization: X-SlapPartition` header, else the form) is taken as made.
        """
        identity = self.identity
        if identity is not None and identity.kind == PARTITION:
            return identity.computer or "", identity.partition or ""
        if identity is not None and identity.kind == USER:
            return None
        if identity is None and self.trusted:
            claimed = _claimed_partition(authorization)
            if claimed is not None:
                return claimed
        computer, partition = p.get("computer_id"), p.get("computer_partition_id")
        return (computer, partition) if computer and partition else None

    def __str__(self) -> str:
        """As the access log names it."""
        if self.trusted:
            return "trusted"
        return str(self.identity) if self.identity else "anonymous"


def _claimed_partition(authorization: str) -> tuple[str, str] | None:
    scheme, _, rest = authorization.partition(" ")
    if scheme.lower() != "x-slappartition":
        return None
    pairs = dict(item.partition("=")[::2] for item in rest.split(","))
    fields = {key.strip(): value.strip() for key, value in pairs.items()}
    if not fields.get("computer_id") or not fields.get("computer_partition_id"):
        raise BadRequest("X-SlapPartition header without computer_id or computer_partition_id")
    return fields["computer_id"], fields["computer_partition_id"]


TRUSTED = Caller(trusted=True)
ANONYMOUS = Caller()
STATE_KEY = "caller"
"""Where a connection's caller is kept in each request's ASGI `state`."""


def caller_of_peer(tls: bool, peercert: Mapping[str, Any] | None, *, insecure: bool) -> Caller:
    """A connection's caller, once per connection: its verified certificate's identity."""
    if not tls:
        return TRUSTED if insecure else ANONYMOUS
    if not peercert:
        return ANONYMOUS
    try:
        return Caller(identity_from_peercert(peercert), serial=peercert.get("serialNumber"))
    except IdentityError as exc:
        return Caller(refused=str(exc))


def caller_of(request: Request) -> Caller:
    """The caller of a request; nobody, when the connection set none."""
    caller = request.scope.get("state", {}).get(STATE_KEY)
    return caller if isinstance(caller, Caller) else ANONYMOUS


Rule = Callable[[Caller, Params], None]


def anyone(caller: Caller, p: Params) -> None:
    """No identity needed: the call proves itself (a registration token)."""


def _identity(caller: Caller, *kinds: str) -> Identity | None:
    """The caller's identity if of `kinds`; None for a trusted caller; else refused."""
    if caller.trusted:
        return None
    identity = caller.identity
    if identity is None:
        raise Forbidden(caller.refused or "this call needs a client certificate")
    if identity.kind not in kinds:
        raise Forbidden(f"{identity} may not make this call")
    return identity


def _same_computer(identity: Identity, computer: str | None) -> None:
    if computer != identity.computer:
        raise Forbidden(f"{identity} may not act for computer {computer!r}")


def computer_itself(parameter: str = "computer_id") -> Rule:
    """The computer named by `parameter`, with its own certificate."""

    def rule(caller: Caller, p: Params) -> None:
        identity = _identity(caller, COMPUTER)
        if identity is not None:
            _same_computer(identity, p.get(parameter))

    return rule


def configuration_of_computer(caller: Caller, p: Params) -> None:
    """`slapos format`'s definition, which names its computer inside (`reference`)."""
    identity = _identity(caller, COMPUTER)
    if identity is not None:
        definition = p.marshalled("xml", None)
        reference = definition.get("reference") if isinstance(definition, dict) else None
        _same_computer(identity, reference)


def partition_or_its_computer(
    computer: str = "computer_id", partition: str = "computer_partition_id"
) -> Rule:
    """The partition named by the call, or the computer holding it."""

    def rule(caller: Caller, p: Params) -> None:
        identity = _identity(caller, COMPUTER, PARTITION)
        if identity is None:
            return
        _same_computer(identity, p.get(computer))
        named = p.get(partition)
        if identity.kind == PARTITION and named != identity.partition:
            raise Forbidden(f"{identity} may not act for partition {named!r}")

    return rule


def user(caller: Caller, p: Params) -> None:
    """A user (who then sees only its own instance trees)."""
    _identity(caller, USER)


def user_or_computer_itself(caller: Caller, p: Params) -> None:
    """A user, or the computer the call names reading about itself."""
    identity = _identity(caller, USER, COMPUTER)
    if identity is not None and identity.kind == COMPUTER:
        _same_computer(identity, p.get("computer_id"))


def requester(caller: Caller, p: Params) -> None:
    """A user requests roots; a partition requests in its own tree; a computer for one of
    its partitions. Form fields naming another requester than the certificate are refused."""
    identity = _identity(caller, USER, PARTITION, COMPUTER)
    if identity is None or identity.kind == USER:
        return
    named = p.get("computer_id"), p.get("computer_partition_id")
    if identity.kind == COMPUTER and not all(named):
        raise Forbidden(f"{identity} requests only for one of its partitions")
    if any(named):
        partition_or_its_computer()(caller, p)


def computer_or_user(caller: Caller, p: Params) -> None:
    """A computer or a user: who uploads to the master's networkcache (not a partition)."""
    _identity(caller, COMPUTER, USER)


def issued(caller: Caller, p: Params) -> None:
    """Any certificate the master issued (a computer, a partition, a user): not anonymous."""
    _identity(caller, COMPUTER, PARTITION, USER)
