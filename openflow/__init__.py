"""Desired switch state → the exact set of OpenFlow 1.3 flows, and back. No I/O.

`pipeline.desired_flows` builds the flows, `diff.diff` reconciles them with what a switch has,
`ofmsg` translates to and from os-ken message objects (building them, never sending them).
Every flow we own carries the controller's tag in its cookie (`cookies`): requests and deletes
match the tag only (`cookies.TAG_MASK`), so flows of anyone else are never dumped, modified or deleted.
"""
