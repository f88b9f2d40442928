"""The bridge reads a finished plain future's fields without its lock.

These are CPython's private names; this test fails on a Python that renames
them, before the fast path could misread a result.
"""

from __future__ import annotations

import concurrent.futures

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
