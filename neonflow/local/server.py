"""The local Neon server process: PostgreSQL up, the API on loopback, until SIGTERM."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from datetime import UTC, datetime
from typing import Any

from werkzeug.serving import make_server

from neonflow.config import Settings
from neonflow.files import write_private
from neonflow.local import extensions
from neonflow.local.api import create_api
from neonflow.local.engine import LocalNeon
from neonflow.local.paths import StatePaths, load_or_create_config
from neonflow.local.postgres import EmbeddedPostgres, free_port
from neonflow.local.proxy import Proxy
from neonflow.local.store import Store
from neonflow.local.tls import Certificates

log = logging.getLogger("neonflow.local")
REAP_EVERY_SECONDS = 30.0


def _port_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As PostgreSQL and werkzeug bind: connections in TIME_WAIT (left by the last stop) must
        # not make the remembered port look taken; a listener still does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT; PostgreSQL is stopped on the way out."""
    paths = StatePaths(settings.state_dir)
    config = load_or_create_config(paths, settings.local.project_id)
    pg = EmbeddedPostgres(paths.pgdata, config["pg_port"], config["pg_password"])
    pg.socket_dir = paths.root / "run"
    pg.init()
    if not pg.running() and not _port_free(pg.port):
        # Somebody took the remembered port while we were down: pick another, remember it.
        config["pg_port"] = pg.port = free_port()
        write_private(paths.config, json.dumps(config, indent=1))
    extensions.install()
    pg.start()
    try:
        _run(settings, paths, config, pg)
    finally:
        pg.stop()
        paths.pid.unlink(missing_ok=True)


def _run(
    settings: Settings, paths: StatePaths, config: dict[str, Any], pg: EmbeddedPostgres
) -> None:
    store = Store(paths.metadata)
    neon = LocalNeon(store, pg, config["project_id"], settings.local.faults)
    proxy = Proxy(neon, Certificates(paths.tls))
    proxy.start()
    neon.hosts = proxy
    try:
        _serve(neon, proxy, paths, config)
    finally:
        neon.close()  # before PostgreSQL stops: resumed operations finish, or stay resumable
        proxy.stop()


def _serve(neon: LocalNeon, proxy: Proxy, paths: StatePaths, config: dict[str, Any]) -> None:
    neon.bootstrap()
    proxy.open_all()
    if not _port_free(config["api_port"]):
        config["api_port"] = free_port()
        write_private(paths.config, json.dumps(config, indent=1))
    app = create_api(neon, paths.token.read_text().strip())
    server = make_server("127.0.0.1", config["api_port"], app, threaded=True)
    stop = threading.Event()

    def _shutdown(signum: int, frame: Any) -> None:
        stop.set()
        neon.wake.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _shutdown)
    signal.signal(signal.SIGINT, _shutdown)

    def _reaper() -> None:
        # At once (a branch may have expired while the server was down), then every
        # REAP_EVERY_SECONDS, or sooner when a branch expires before that.
        while not stop.is_set():
            neon.tick()
            wait = REAP_EVERY_SECONDS
            expiry = neon.next_expiry()
            if expiry is not None:
                # A branch past its expiry that could not go yet (busy, a full disk): soon.
                wait = min(wait, max(1.0, (expiry - datetime.now(UTC)).total_seconds() + 0.05))
            neon.wake.wait(wait)  # set by a new expiration, and by the shutdown
            neon.wake.clear()

    threading.Thread(target=_reaper, daemon=True, name="reaper").start()
    write_private(paths.pid, str(os.getpid()))
    log.info("local Neon on http://127.0.0.1:%s/api/v2", config["api_port"])
    server.serve_forever()
