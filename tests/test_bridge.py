"""The bridge: the private fields it reads, and the outcome it delivers.

It reads a finished plain future's fields without its lock. These are
CPython's private names; the first test fails on a Python that renames them,
before the fast path could misread a result.
"""

from __future__ import annotations

import concurrent.futures

import pytest

from aiobound import _bridge


def test_a_finished_future_keeps_state_result_and_exception_where_we_read_them() -> (
    None
):
    ok: concurrent.futures.Future[int] = concurrent.futures.Future()
    ok.set_result(7)
    assert ok._state == _bridge._FINISHED
    assert (ok._result, ok._exception) == (7, None)
    failed: concurrent.futures.Future[int] = concurrent.futures.Future()
    error = ValueError("x")
    failed.set_exception(error)
    assert failed._state == _bridge._FINISHED
    assert failed._exception is error
    cancelled: concurrent.futures.Future[int] = concurrent.futures.Future()
    cancelled.cancel()
    assert cancelled._state != _bridge._FINISHED


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("no text")


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (KeyboardInterrupt("stop"), "KeyboardInterrupt: stop"),
        (StopIteration(), "StopIteration"),
        (StopAsyncIteration("x" * 200), "StopAsyncIteration: " + "x" * 200),
        (SystemExit("x" * 201), "SystemExit: " + "x" * 197 + "..."),
        (GeneratorExit("y" * 5000), "GeneratorExit: " + "y" * 197 + "..."),
    ],
)
def test_what_a_future_cannot_carry_is_wrapped_and_described(
    error: BaseException, message: str
) -> None:
    delivered = _bridge.deliverable(error, None)
    assert type(delivered) is RuntimeError
    assert str(delivered) == f"the submitted call raised {message}"
    assert delivered.__cause__ is error


def test_an_exception_that_cannot_be_printed_is_described_by_its_type() -> None:
    error = _Unprintable()
    assert _bridge.deliverable(error, None) is error  # an Exception: as it is
    # StopIteration's text is its argument's, which cannot be printed.
    wrapped = _bridge.deliverable(StopIteration(error), None)
    assert str(wrapped) == "the submitted call raised StopIteration"


def test_explain_may_reword_and_its_own_failure_keeps_the_original() -> None:
    error = ValueError("raw")
    clearer = TypeError("clearer")
    assert _bridge.deliverable(error, lambda _: clearer) is clearer

    def broken(_: BaseException) -> BaseException:
        raise LookupError("explain failed")

    assert _bridge.deliverable(error, broken) is error
