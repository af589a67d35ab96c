"""A small Flask app on Neon: application factory, typed models, JSON API, Alembic migrations."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from sample_app.settings import ENV_FILE, load_config

log = logging.getLogger(__name__)


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app from the environment and ``sample_app/.env``; ``test_config`` wins over both.

    ``test_config`` may also set ``ENV_FILE`` (a path, or None to read no file).
    """
    from sample_app import api
    from sample_app.models import db

    overrides = dict(test_config or {})
    env_file = overrides.pop("ENV_FILE", ENV_FILE)
    app = Flask(__name__, static_folder=None)
    app.config.from_mapping(load_config(overrides, env_file))
    db.init_app(app)
    app.register_blueprint(api.bp)
    app.register_error_handler(HTTPException, api.json_error)
    if app.config["DB_WAIT_ON_START"]:
        with app.app_context():
            wait_for_database(
                db.engine,
                attempts=app.config["DB_CONNECT_ATTEMPTS"],
                delay=app.config["DB_CONNECT_DELAY"],
                max_delay=app.config["DB_CONNECT_MAX_DELAY"],
            )
            # Fork-safe under `gunicorn --preload`: workers must not share pooled connections.
            db.engine.dispose()
    return app


def wait_for_database(
    engine: Engine,
    attempts: int = 5,
    delay: float = 0.5,
    max_delay: float = 8.0,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Run ``SELECT 1``, retrying with capped exponential backoff: a suspended Neon compute
    takes a few seconds to wake. Raises the last error after ``attempts`` tries."""
    for attempt in range(1, max(attempts, 1) + 1):
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return
        except OperationalError as exc:
            reason = str(exc.orig or exc).strip()
            if attempt >= attempts:
                log.warning(
                    "database unreachable after %d attempts, giving up: %s", attempt, reason
                )
                raise
            wait = min(delay * 2 ** (attempt - 1), max_delay)
            log.warning(
                "database unreachable (attempt %d/%d), retrying in %.2fs: %s",
                attempt,
                attempts,
                wait,
                reason,
            )
            sleep(wait)
