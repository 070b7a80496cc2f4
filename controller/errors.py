"""The controller's two error kinds, as kopf has them: retry later, or stop asking.

The REST layer maps them to status codes in one place (`controller.api`); everything below it only
raises. Every message names its object (`pod default/web-0: 198.18.0.5 is held by default/db-1`)
because the message is what reaches the CNI plugin's caller, and so a person.
"""

from __future__ import annotations


class ControllerError(Exception):
    """Base of every error the controller means to report (anything else is a bug: HTTP 500)."""


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
