"""The master's authorization rules, decided from an identity and the call's parameters."""

from __future__ import annotations

import pytest

from slapgrid.master import access
from slapgrid.master.access import ANONYMOUS, TRUSTED, Caller
from slapgrid.master.errors import BadRequest, Forbidden
from slapgrid.master.params import Params
from slapgrid.master.pki.identity import Identity
from slapgrid.slap import marshal

COMP_A = Caller(Identity.for_computer("A"))
COMP_B = Caller(Identity.for_computer("B"))
PART_A0 = Caller(Identity.for_partition("A", "slappart0"))
PART_B0 = Caller(Identity.for_partition("B", "slappart0"))
ALICE = Caller(Identity.for_user("alice"))


def params(**values: str) -> Params:
    return Params(values.items(), none_is_absent=True)


ON_A0 = params(computer_id="A", computer_partition_id="slappart0")

CASES = [
    # rule, params, callers allowed, callers refused
    (access.computer_itself(), params(computer_id="A"), [COMP_A], [COMP_B, PART_A0, ALICE]),
    (access.partition_or_its_computer(), ON_A0, [COMP_A, PART_A0], [COMP_B, PART_B0, ALICE]),
    (
        access.partition_or_its_computer(),
        params(computer_id="A", computer_partition_id="slappart1"),
        [COMP_A],
        [PART_A0],
    ),
    (access.user, params(), [ALICE], [COMP_A, PART_A0]),
    (access.user_or_computer_itself, params(computer_id="A"), [ALICE, COMP_A], [COMP_B, PART_A0]),
    (access.requester, params(), [ALICE, PART_A0], [COMP_A]),
    (access.requester, ON_A0, [ALICE, PART_A0, COMP_A], [PART_B0, COMP_B]),
    (
        access.configuration_of_computer,
        params(xml=marshal.dumps({"reference": "A"}).decode()),
        [COMP_A],
        [COMP_B, PART_A0, ALICE],
    ),
    (access.anyone, params(), [ANONYMOUS, COMP_A, ALICE], []),
]


@pytest.mark.parametrize(("rule", "p", "allowed", "refused"), CASES)
def test_each_rule_allows_its_callers_and_refuses_the_others(
    rule: access.Rule, p: Params, allowed: list[Caller], refused: list[Caller]
) -> None:
    for caller in [*allowed, TRUSTED]:
        rule(caller, p)
    for caller in refused:
        with pytest.raises(Forbidden):
            rule(caller, p)
    if rule is not access.anyone:
        with pytest.raises(Forbidden, match="needs a client certificate"):
            rule(ANONYMOUS, p)


def test_a_certificate_naming_nobody_is_refused_with_its_reason() -> None:
    caller = Caller(refused="certificate of kind 'server': not a computer, partition or user")
    with pytest.raises(Forbidden, match="kind 'server'"):
        access.computer_itself()(caller, params(computer_id="A"))


def test_the_requester_is_the_certificate_never_the_header_or_the_form() -> None:
    claim = "X-SlapPartition computer_id=B, computer_partition_id=slappart9"
    other = params(computer_id="B", computer_partition_id="slappart9")
    assert PART_A0.requester(other, claim) == ("A", "slappart0")
    assert ALICE.requester(other, claim) is None  # a user requests roots only
    assert COMP_A.requester(ON_A0, claim) == ("A", "slappart0")  # the form, checked by the rule


def test_a_trusted_caller_requests_as_it_claims() -> None:
    claim = "X-SlapPartition computer_id=B, computer_partition_id=slappart9"
    assert TRUSTED.requester(ON_A0, claim) == ("B", "slappart9")
    assert TRUSTED.requester(ON_A0) == ("A", "slappart0")
    assert TRUSTED.requester(params()) is None
    with pytest.raises(BadRequest):
        TRUSTED.requester(params(), "X-SlapPartition computer_id=B")


def test_only_a_user_has_an_owner() -> None:
    assert ALICE.owner == "alice"
    assert TRUSTED.owner is PART_A0.owner is COMP_A.owner is None


def test_a_connection_is_known_by_its_verified_certificate() -> None:
    peercert = {"subject": ((("organizationalUnitName", "computer"),), (("commonName", "A"),))}
    assert access.caller_of_peer(True, peercert, insecure=False) == COMP_A
    assert access.caller_of_peer(True, None, insecure=False) == ANONYMOUS
    assert access.caller_of_peer(False, None, insecure=True) == TRUSTED
    assert access.caller_of_peer(False, None, insecure=False) == ANONYMOUS
    server = {"subject": ((("organizationalUnitName", "server"),), (("commonName", "h"),))}
    refused = access.caller_of_peer(True, server, insecure=False)
    assert refused.identity is None and refused.refused
    assert str(COMP_A) == "computer A" and str(TRUSTED) == "trusted"
