"""User-Mode Linux for the kernel features this machine lacks (ipvlan).

`UmlInstance` boots Debian's `linux.uml` on the host's own filesystem (hostfs) and runs one command
inside it; `deploy.uml.pytest_plugin` uses it to run tests marked `uml` inside one instance per session.
"""

from deploy.uml.instance import INNER_HOST_DIR, MissingUml, UmlInstance, UmlResult, find_kernel, tap_device

__all__ = ["INNER_HOST_DIR", "MissingUml", "UmlInstance", "UmlResult", "find_kernel", "tap_device"]
