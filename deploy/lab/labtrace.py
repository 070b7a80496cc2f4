"""`underlayctl trace` of a lab pod: the controller's operator REST reached from inside the lab's
management namespace (where its API listens), and the lab's own Open vSwitch run directory, so
packets are traced too. `underlay-lab demo` ends with one; tests/deploy/test_lab_trace.py uses it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ctl import trace
from deploy.lab.control import ApiError

if TYPE_CHECKING:
    from deploy.lab.lab import Lab


def trace_pod(lab: Lab, query: str, *, from_port: int | None = None) -> trace.Report:
    """Trace `query` (a pod's IP or name, as `underlayctl trace` takes it) in `lab`."""
    controller = lab.controller()
    token = controller.operator_token

    def get(path: str) -> dict[str, Any]:
        return controller.request("GET", path, token=token)

    return trace.trace(get, query, ovs_rundir=lab.rig.ovs.workdir, from_port=from_port,
                       api_errors=(ApiError, OSError))
