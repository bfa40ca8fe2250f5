"""One rule for Software Release URLs, shared by the agent and the embedded master."""

from __future__ import annotations

import pytest

from slapgrid.master.errors import BadRequest
from slapgrid.master.inputs import InstanceRequest, check_request, check_supply
from slapgrid.node import safety
from slapgrid.slap import urls

GOOD = ["https://lab.example.com/software/kvm/software.cfg", "/srv/sr/software.cfg"]
BAD = ["", " ", "http://x/a b", "http://x/s.cfg\n", "http://x/;reboot", "$(id)", "a\x00b", "`x`"]


@pytest.mark.parametrize("url", GOOD)
def test_good_urls_pass_everywhere(url: str) -> None:
    assert urls.software_release_url(url) == safety.software_release_url(url) == url
    check_supply(url, "available")
    check_request(InstanceRequest(url, "title"))


@pytest.mark.parametrize("url", BAD)
def test_a_url_the_agent_refuses_the_master_refuses_with_the_same_reason(url: str) -> None:
    with pytest.raises(urls.InvalidURL) as rule:
        urls.software_release_url(url)
    with pytest.raises(safety.UnsafeValueError, match="refusing software release URL") as agent:
        safety.software_release_url(url)
    for check in (
        lambda: check_supply(url, "available"),
        lambda: check_request(InstanceRequest(url, "t")),
    ):
        with pytest.raises(BadRequest) as master:
            check()
        assert str(master.value) == str(rule.value)
    assert str(rule.value) in str(agent.value)


def test_a_bad_url_supplied_before_the_rule_can_still_be_destroyed() -> None:
    check_supply("http://x/a b", "destroyed")
    with pytest.raises(BadRequest):
        check_supply("", "destroyed")


@pytest.mark.parametrize(
    "url", ["master.example.com", "ftp://h/", "http://", "http://h:99999/", "http://h:port/"]
)
def test_master_url_must_be_http_with_a_host_and_a_port_number(url: str) -> None:
    with pytest.raises(urls.InvalidURL, match="master URL must be"):
        urls.normalise_master_url(url)
