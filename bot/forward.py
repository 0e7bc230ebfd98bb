"""A local TCP port forwarded to a server devdb reaches directly (a local cluster, the
shared server), for `devdb use NAME --port P`: the same localhost:P whichever environment
is behind it. Cloud environments are forwarded by SSM or ssh instead (`connect.py`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

CHUNK = 1 << 16


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def forward(
    local_port: int, host: str, port: int, on_listening: Callable[[], None] | None = None
) -> None:
    """Accept on 127.0.0.1:`local_port` and relay each connection to host:port, until
    cancelled."""

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(host, port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, server_w), _pipe(server_r, client_w))

    server = await asyncio.start_server(relay, "127.0.0.1", local_port)
    async with server:
        if on_listening:
            on_listening()
        await server.serve_forever()
