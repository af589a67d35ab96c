"""The floor for bench/proxy.py: a TLS front door to PostgreSQL that does nothing but relay.

It answers ``SSLRequest``, terminates TLS with the local Neon's context and pipes bytes to the
Unix socket the proxy uses, with the proxy's own ``Pipe``; authentication is PostgreSQL's (no
SCRAM-PLUS, routing or cancel keys). What it costs beside PostgreSQL direct is what TLS and one
more hop cost. Run by bench/proxy.py in a process of its own, as the proxy has one; prints its
port, then serves until killed.

    python bench/tls_relay.py TLS_FOLDER BACKEND_SOCKET
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from pathlib import Path
from typing import cast

from neonflow.local.relay import Pipe, new_loop
from neonflow.local.tls import Certificates


async def session(client: Pipe, context: ssl.SSLContext, backend: str) -> None:
    await client.startup_packet()  # SSLRequest
    client.write(b"S")
    assert client.transport is not None
    loop = asyncio.get_running_loop()
    tls = await loop.start_tls(client.transport, client, context, server_side=True)
    client.transport = cast(asyncio.Transport, tls)
    pg = Pipe()
    await loop.create_unix_connection(lambda: pg, backend)
    client.pipe_to(pg)
    pg.pipe_to(client)


async def serve(tls_folder: Path, backend: str) -> None:
    context = Certificates(tls_folder).for_address("127.0.0.1").context
    loop = asyncio.get_running_loop()
    sessions: set[asyncio.Task[None]] = set()

    def begin(client: Pipe) -> None:
        task = loop.create_task(session(client, context, backend))
        sessions.add(task)  # kept until done: the loop holds tasks only weakly
        task.add_done_callback(sessions.discard)

    server = await loop.create_server(lambda: Pipe(on_open=begin), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    new_loop().run_until_complete(serve(Path(sys.argv[1]), sys.argv[2]))  # the proxy's loop
