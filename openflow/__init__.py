"""Desired switch state → the exact set of OpenFlow 1.3 flows, and back. No I/O.

`pipeline.desired_flows` builds the flows, `diff.diff` reconciles them with what a switch has,
`ofmsg` translates to and from os-ken message objects (building them, never sending them).
"""

COOKIE_MASK = 0xFFFF_FFFF_FFFF_FFFF
"""Every flow we own carries exactly the controller's cookie: requests and deletes match all 64 bits,
so flows of anyone else (another cookie) are never dumped, modified or deleted."""
