"""The controller's two error kinds, as kopf has them: retry later, or stop asking.

The REST layer maps them to status codes in one place (`controller.api`); everything below it only
raises. Every message names its object (`pod default/web-0: 198.18.0.5 is held by default/db-1`)
because the message is what reaches the CNI plugin's caller, and so a person.
"""

from __future__ import annotations


class ControllerError(Exception):
    """Base of every error the controller means to report (anything else is a bug: HTTP 500)."""

    event: str | None = None  # the reason of the Kubernetes Event about the pod, for those below


class TemporaryError(ControllerError):
    """The same request may succeed later: a switch is down, every free address is cooling down."""

    def __init__(self, message: str, *, delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay


class SwitchUnavailable(TemporaryError):
    """A switch is not connected or did not acknowledge (barrier) in time. Raised by the fabric."""


class PermanentError(ControllerError):
    """Repeating the same request gives the same answer: change the request or the config."""


class BadRequest(PermanentError):
    """The request itself is wrong; the message starts with the field it is about."""


class NotFound(PermanentError):
    """The node (or other named object) is not known to the controller."""


class ConflictError(PermanentError):
    """The request collides with what others hold: an address, a MAC, an exhausted pool."""


# -- why a pod gets no address ------------------------------------------------------------------
# Each names the reason of the Kubernetes Event the pod gets (`kubectl describe pod` shows it) when
# the controller sees the cluster; the message is the Event's and the CNI error's.


class InvalidIntent(BadRequest):
    """An address annotation the controller cannot read (the message names the object and key)."""

    event = "InvalidAddressIntent"


class Contradiction(InvalidIntent):
    """Two sources of the same precedence say different things (both are named)."""

    event = "ConflictingAddressIntent"


class NoPoolMatches(ConflictError):
    """No pool will give this pod an address: none named or default, or each one refuses it."""

    event = "NoPoolMatches"


class AddressInUse(ConflictError):
    """The requested address is another pod's, or reserved for another StatefulSet pod."""

    event = "AddressInUse"

    def __init__(self, message: str, *, reserved_for: str | None = None) -> None:
        super().__init__(message)
        self.reserved_for = reserved_for  # the sticky key holding the address, when reserved


class PoolExhausted(ConflictError):
    """Every address of the pool is held or reserved."""

    event = "PoolExhausted"


class PoolCoolingDown(TemporaryError):
    """Every free address of the pool was released a moment ago and waits out its cooldown."""

    event = "PoolCoolingDown"
