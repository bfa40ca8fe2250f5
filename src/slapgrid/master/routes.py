"""The master's route table: which method and URL reach which endpoint, all in one list.

Endpoints that are coroutines run on the event loop; the others block on the store and run
in worker threads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from slapgrid.master import endpoints, hateoas, polled
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
    body: str = "form"  # what a POST carries: "form" (SLAP) or "json" (the JSON API)


ROUTES: tuple[Route, ...] = (
    # what nodes read
    Route("GET", "getFullComputerInformation", polled.full_computer_information),
    Route("GET", "getComputerInformation", polled.full_computer_information),
    Route("GET", CHANGES_PATH, polled.change_feed),
    Route("GET", "registerComputerPartition", endpoints.register_partition),
    Route("GET", "getComputerPartitionCertificate", endpoints.certificate),
    Route("GET", "getHostingSubscriptionIpList", endpoints.hosting_ip_list),
    # what users read
    Route("GET", "getComputerStatus", endpoints.computer_status),
    Route("GET", "getComputerPartitionStatus", endpoints.partition_status),
    Route("GET", "getSoftwareInstallationStatus", endpoints.software_status),
    Route("GET", "getHateoasUrl", endpoints.hateoas_url),
    Route("GET", hateoas.PATH, endpoints.hateoas_navigation),
    Route("POST", instance_trees.LIST_PATH, endpoints.instance_tree_list, body="json"),
    Route("POST", instance_trees.GET_PATH, endpoints.instance_tree, body="json"),
    # what nodes report
    Route("POST", "buildingSoftwareRelease", endpoints.software_report("building")),
    Route("POST", "availableSoftwareRelease", endpoints.software_report("available")),
    Route("POST", "destroyedSoftwareRelease", endpoints.software_report("destroyed")),
    Route("POST", "softwareReleaseError", endpoints.software_report("error")),
    Route("POST", "startedComputerPartition", endpoints.partition_report("started")),
    Route("POST", "stoppedComputerPartition", endpoints.partition_report("stopped")),
    Route("POST", "softwareInstanceError", endpoints.partition_report("error")),
    Route("POST", "destroyedComputerPartition", endpoints.destroyed),
    Route("POST", "softwareInstanceBang", endpoints.bang),
    Route("POST", "computerBang", endpoints.computer_bang),
    Route("POST", "useComputer", endpoints.use_computer),
    # what instances and users write
    Route("POST", "requestComputerPartition", endpoints.request_instance),
    Route("POST", "softwareInstanceRename", endpoints.rename),
    Route("POST", "setComputerPartitionConnectionXml", endpoints.set_connection),
    Route("POST", "updateComputerPartitionRelatedInstanceList", endpoints.related_instances),
    Route("POST", "supplySupply", endpoints.supply),
    Route("POST", "loadComputerConfigurationFromXML", endpoints.load_configuration),
    # a new node trades its one-time token for its certificate (`slapgrid register`)
    Route("POST", REGISTER_PATH, endpoints.register_computer),
)
