"""Hostile HTTP input: schemathesis against the FastAPI example's OpenAPI.

The example app runs in uvicorn on 127.0.0.1 (in a thread: schemathesis
calls it synchronously, with requests); schemathesis reads the schema over
HTTP and sends generated requests, valid (positive) and invalid (negative),
to every documented operation. Every answer must match the schema (status
code declared, body and headers as declared, invalid input refused with a
4xx), and no 5xx may come back but the documented 503.

Bounded: a few dozen examples per operation and mode, no deadline (a slow
shared machine is not a failure), well under 20 s in all.
"""

from __future__ import annotations

import socket
import threading
from typing import TYPE_CHECKING, Any

import pytest
import requests
import schemathesis
import uvicorn
from fastapi_app import create_app
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

if TYPE_CHECKING:
    from collections.abc import Iterator

    from schemathesis import Case

EXAMPLES = 25
REFUSAL_DETAILS = {
    "Service overloaded; retry later",
    "Service shutting down; retry later",
}


def instant(seconds: float) -> float:
    """The example's /work without the sleep: the run stays short."""
    return seconds


class SlotHolder:
    """A /work that holds its slot until released, to make the app refuse."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, seconds: float) -> float:
        self.started.set()
        self.release.wait(60)  # a guard against a hang in a broken test
        return seconds


@pytest.fixture(scope="module", params=["idle", "saturated"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, bool]]:
    """The example app, served by uvicorn on an ephemeral port of 127.0.0.1.

    ``idle``: calls run at once. ``saturated``: one request holds the only
    slot and no one may wait (``max_pending=0``), so every other request
    that reaches the executor gets the 503.
    """
    data_dir = tmp_path_factory.mktemp("data")
    (data_dir / "data.txt").write_bytes(b"aiobound\n" * 10)
    holder = SlotHolder()
    if request.param == "idle":
        app = create_app(workers=2, max_pending=4, data_dir=data_dir, work=instant)
    else:
        app = create_app(
            workers=1, bound=1, max_pending=0, data_dir=data_dir, work=holder
        )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # clients may connect at once: the kernel queues them
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_config=None,
        log_level="warning",
        access_log=False,
        loop="asyncio",
        timeout_keep_alive=60,  # longer than the client's 5 s: see test_fastapi
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True
    )
    thread.start()
    url = f"http://127.0.0.1:{port}"
    holding: threading.Thread | None = None
    try:
        if request.param == "saturated":
            holding = threading.Thread(
                target=requests.get, args=(f"{url}/work",), kwargs={"timeout": 60}
            )
            holding.start()
            assert holder.started.wait(60)
        yield url, request.param == "saturated"
    finally:
        holder.release.set()
        if holding is not None:
            holding.join(60)
        server.should_exit = True
        thread.join(30)
        sock.close()
    assert not thread.is_alive()


def check_no_undocumented_server_error(case: Case[Any], response: Any) -> None:
    """Any 5xx must be the documented 503, with Retry-After and its body."""
    if response.status_code < 500:
        return
    assert response.status_code == 503, (case, response.status_code, response.text)
    # schemathesis keeps headers by lower-case name, as lists of values.
    assert response.headers["retry-after"] == ["1"]
    assert response.json()["detail"] in REFUSAL_DETAILS


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_answer_matches_the_schema(
    served: tuple[str, bool], mode: GenerationMode
) -> None:
    base_url, saturated = served
    refused = 0

    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert {op.path for op in operations} == {
        "/work",
        "/batch",
        "/file/{name}",
        "/stats",
    }
    if mode is GenerationMode.NEGATIVE:
        # Invalid input needs a constrained parameter: a path segment is any
        # string, so only operations with query parameters qualify (/work,
        # /batch).
        operations = [
            op
            for op in operations
            if any(p.location == "query" for p in op.iter_parameters())
        ]
        assert operations
    calls = 0
    for operation in operations:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: Case[Any]) -> None:
            nonlocal calls, refused
            calls += 1
            # 5xx are judged below: the 503 is documented, others are not.
            response = case.call_and_validate(
                base_url=base_url, excluded_checks=[not_a_server_error]
            )
            check_no_undocumented_server_error(case, response)
            refused += response.status_code == 503

        check()
    assert calls >= len(operations)
    if mode is GenerationMode.POSITIVE:
        # Valid requests to /work, /batch and /file reach the executor: refused
        # when it is saturated, never when it is idle.
        assert (refused > 0) == saturated
