"""The served process freezes what start-up made (app/serve.py, FrozenAtStartServer): a full
collection then walks only what requests create, and stops the event loop for that long."""

from __future__ import annotations

import gc
from typing import Any

import pytest
import uvicorn

from app.serve import FrozenAtStartServer

pytestmark = pytest.mark.unit


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Never called: the test only starts the server."""


async def test_the_server_freezes_every_object_alive_once_it_has_started() -> None:
    config = uvicorn.Config(_app, host="127.0.0.1", port=0, lifespan="off",
                            log_level="warning")
    config.load()
    server = FrozenAtStartServer(config)
    server.lifespan = config.lifespan_class(config)  # as uvicorn's Server._serve does
    gc.unfreeze()  # nothing left frozen by another test
    try:
        await server.startup()
        assert server.started
        # The interpreter and the libraries this test process loaded: tens of thousands.
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()  # this test process is not the server's: let its objects go again
        await server.shutdown()
