"""The client's coalescer: concurrent submissions share batches, and each gets its own answer."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from node_agent.controller_client import Coalescer, ControllerError, PermanentError


def wait_until(condition, timeout: float = 5.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


class Sender:
    """Records batch sizes; the first batch is held until the test lets it go."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release_first = threading.Event()

    def __call__(self, batch: list[dict]) -> list[dict | ControllerError]:
        self.batches.append([item["n"] for item in batch])
        if len(self.batches) == 1:
            assert self.release_first.wait(5)
        return [PermanentError(f"odd {item['n']}") if item["n"] % 2 else {"double": item["n"] * 2} for item in batch]


def submit_all(coalescer: Coalescer, sender: Sender, count: int) -> list[object]:
    def one(n: int) -> object:
        try:
            return coalescer.submit({"n": n})
        except ControllerError as err:
            return str(err)

    with ThreadPoolExecutor(max_workers=count) as pool:
        first = pool.submit(one, 0)
        wait_until(lambda: len(sender.batches) == 1)
        rest = [pool.submit(one, n) for n in range(1, count)]
        wait_until(lambda: len(coalescer._queue) == count - 1)  # all queued behind the batch in flight
        sender.release_first.set()
        return [first.result()] + [future.result() for future in rest]


def test_what_queues_behind_a_batch_goes_in_the_next_one_and_answers_go_to_their_caller() -> None:
    sender = Sender()
    answers = submit_all(Coalescer(sender, max_batch=100), sender, 9)
    assert [len(batch) for batch in sender.batches] == [1, 8]
    assert answers == [{"double": 0}, "odd 1", {"double": 4}, "odd 3", {"double": 8}, "odd 5", {"double": 12},
                       "odd 7", {"double": 16}]


def test_batches_are_capped() -> None:
    sender = Sender()
    submit_all(Coalescer(sender, max_batch=3), sender, 8)
    assert [len(batch) for batch in sender.batches] == [1, 3, 3, 1]
    assert sorted(n for batch in sender.batches for n in batch) == list(range(8))


def test_a_failed_send_reaches_its_callers_and_the_next_batch_still_goes() -> None:
    calls = []

    def send(batch: list[dict]) -> list[dict | ControllerError]:
        calls.append(len(batch))
        if len(calls) == 1:
            raise OSError("connection reset")
        return []  # no answer at all: a broken controller

    coalescer = Coalescer(send, max_batch=10)
    with pytest.raises(OSError, match="connection reset"):
        coalescer.submit({"n": 1})
    with pytest.raises(PermanentError, match="0 answers to a batch of 1 pod requests"):
        coalescer.submit({"n": 2})
    assert calls == [1, 1]
