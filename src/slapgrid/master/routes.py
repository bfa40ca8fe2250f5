"""The master's route table: which method and URL reach which endpoint, and who may call
it, all in one list.

Endpoints that are coroutines run on the event loop; the others block on the store and run
in worker threads, but for brief writes (`runners`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from slapgrid.master import access, endpoints, hateoas, polled
from slapgrid.master.cache import endpoints as cache
from slapgrid.master.params import Params
from slapgrid.master.state import MasterState
from slapgrid.slap import instance_trees
from slapgrid.slap.changes import CHANGES_PATH
from slapgrid.slap.registration import REGISTER_PATH

Handler = Callable[[MasterState, Params, Request], Response | Awaitable[Response]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # below the master's URL, without the leading slash
    handler: Handler
    access: access.Rule  # who may call it, checked before the handler runs
    body: str = "form"  # what a POST carries: "form" (SLAP), "json" (the JSON API), or
    # "raw": the handler reads the body itself (the networkcache's uploads, streamed)
    brief: bool = False  # one short write transaction (`runners.brief_writes`)


def brief_write(path: str, handler: Handler, rule: access.Rule) -> Route:
    return Route("POST", path, handler, rule, brief=True)


# who may call each (`access`): a computer on itself, a partition on itself, a user
COMPUTER = access.computer_itself()
PARTITION = access.partition_or_its_computer()
SLAP_PARTITION = access.partition_or_its_computer(
    "computer_reference", "computer_partition_reference"
)
USER = access.user
UPLOADER = access.computer_or_user

ROUTES: tuple[Route, ...] = (
    # what nodes read
    Route("GET", "getFullComputerInformation", polled.full_computer_information, COMPUTER),
    Route("GET", "getComputerInformation", polled.full_computer_information, COMPUTER),
    Route("GET", CHANGES_PATH, polled.change_feed, COMPUTER),
    Route("GET", "registerComputerPartition", endpoints.register_partition, SLAP_PARTITION),
    Route("GET", "getComputerPartitionCertificate", endpoints.certificate, PARTITION),
    Route("GET", "getHostingSubscriptionIpList", endpoints.hosting_ip_list, PARTITION),
    Route("GET", "getComputerPartitionStatus", endpoints.partition_status, PARTITION),
    # what users read
    Route("GET", "getComputerStatus", endpoints.computer_status, access.user_or_computer_itself),
    Route(
        "GET",
        "getSoftwareInstallationStatus",
        endpoints.software_status,
        access.user_or_computer_itself,
    ),
    Route("GET", "getHateoasUrl", endpoints.hateoas_url, USER),
    Route("GET", hateoas.PATH, endpoints.hateoas_navigation, USER),
    Route("POST", instance_trees.LIST_PATH, endpoints.instance_tree_list, USER, body="json"),
    Route("POST", instance_trees.GET_PATH, endpoints.instance_tree, USER, body="json"),
    # what nodes report
    brief_write("buildingSoftwareRelease", endpoints.software_report("building"), COMPUTER),
    brief_write("availableSoftwareRelease", endpoints.software_report("available"), COMPUTER),
    brief_write("destroyedSoftwareRelease", endpoints.software_report("destroyed"), COMPUTER),
    brief_write("softwareReleaseError", endpoints.software_report("error"), COMPUTER),
    brief_write("startedComputerPartition", endpoints.partition_report("started"), PARTITION),
    brief_write("stoppedComputerPartition", endpoints.partition_report("stopped"), PARTITION),
    brief_write("softwareInstanceError", endpoints.partition_report("error"), PARTITION),
    brief_write("destroyedComputerPartition", endpoints.destroyed, COMPUTER),
    brief_write("softwareInstanceBang", endpoints.bang, PARTITION),
    brief_write("computerBang", endpoints.computer_bang, COMPUTER),
    Route("POST", "useComputer", endpoints.use_computer, COMPUTER),
    Route(
        "POST",
        "loadComputerConfigurationFromXML",
        endpoints.load_configuration,
        access.configuration_of_computer,
    ),
    # what instances and users write
    brief_write("requestComputerPartition", endpoints.request_instance, access.requester),
    brief_write("softwareInstanceRename", endpoints.rename, PARTITION),
    brief_write("setComputerPartitionConnectionXml", endpoints.set_connection, PARTITION),
    Route(
        "POST", "updateComputerPartitionRelatedInstanceList", endpoints.related_instances, PARTITION
    ),
    brief_write("supplySupply", endpoints.supply, USER),
    # a new node trades its one-time token for its certificate (`slapgrid register`)
    Route("POST", REGISTER_PATH, endpoints.register_computer, access.anyone),
    # the networkcache (slapos.libnetworkcache): computers and users upload, all download
    Route("POST", "shacache", cache.upload_file, UPLOADER, body="raw"),
    Route("PUT", "shacache/{sha512}", cache.upload_file, UPLOADER, body="raw"),
    Route("GET", "shacache/{sha512}", cache.download_file, access.issued),
    Route("PUT", "shadir/{key}", cache.add_entry, UPLOADER, body="raw"),
    Route("GET", "shadir/{key}", cache.entries, access.issued),
)
