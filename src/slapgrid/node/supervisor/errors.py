"""What goes wrong with supervisord, for every module of this package and its callers."""

from __future__ import annotations

import xmlrpc.client

from slapgrid.errors import SlapgridError


class SupervisorError(SlapgridError):
    """supervisord could not be configured, launched, reached or obeyed."""


class SupervisorFault(SupervisorError):
    """supervisord refused an XML-RPC call; `code` is one of `supervisor.xmlrpc.Faults`."""

    def __init__(self, method: str, fault: xmlrpc.client.Fault) -> None:
        super().__init__(f"supervisord refused {method}: {fault.faultString}")
        self.code = fault.faultCode
