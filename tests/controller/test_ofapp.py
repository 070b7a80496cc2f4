"""The OpenFlow application's edges: a handler bug stops the process loudly; a frame a pod sends
(and the switch hands over in a packet-in) cannot make a handler raise."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from hypothesis import given
from hypothesis import strategies as st

from controller.ofapp import EX_SOFTWARE, frame_source

BUGGY_HANDLER = textwrap.dedent("""
    import logging, sys
    from types import SimpleNamespace
    from controller.ofapp import kill_on_exception

    logging.basicConfig(stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")

    class App:
        @kill_on_exception
        def barrier_reply(self, ev):
            return {}["no such key"]

    class EventOFPBarrierReply(SimpleNamespace):
        pass

    App().barrier_reply(EventOFPBarrierReply(msg=SimpleNamespace(datapath=SimpleNamespace(id=7))))
    print("the event loop went on")
""")


def test_a_handler_bug_stops_the_process_with_the_handler_event_and_switch_named() -> None:
    proc = subprocess.run([sys.executable, "-c", BUGGY_HANDLER], capture_output=True, text=True, timeout=60)

    assert proc.returncode == EX_SOFTWARE, proc.stderr
    assert "the event loop went on" not in proc.stdout
    assert ("CRITICAL underlay.ofapp event=handler-bug handler=barrier_reply of=EventOFPBarrierReply switch=7: "
            "stopping the controller") in proc.stderr
    assert "KeyError: 'no such key'" in proc.stderr, "the traceback is logged"


@given(st.binary(max_size=200))
def test_any_frame_gives_its_source_mac_or_none_never_an_exception(frame: bytes) -> None:
    source = frame_source(frame)

    if len(frame) < 14:
        assert source is None
    else:
        assert source == ":".join(f"{b:02x}" for b in frame[6:12])


def test_the_source_of_a_real_frame() -> None:
    frame = bytes.fromhex("ffffffffffff" "02550c6120b0" "0806") + bytes(28)
    assert frame_source(frame) == "02:55:0c:61:20:b0"
