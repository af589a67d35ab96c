"""``python -m sample_app.demo``: serve the app over real HTTP and use its API once.

Part of ``make demo``: after ``neonflow branch start`` the app reads ``DATABASE_URL`` from
``sample_app/.env``, so what this prints comes from the feature branch's database.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import httpx
from werkzeug.serving import make_server

from sample_app import create_app


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = create_app()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    print(f"sample app serving on {base} (DATABASE_URL from sample_app/.env)")
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            name = f"ada-{int(time.time())}"
            calls = [
                ("GET", "/health", None),
                ("POST", "/users", {"username": name, "email": f"{name}@example.com"}),
            ]
            user_id = None
            for method, path, body in calls:
                response = http.request(method, path, json=body)
                print(f"{method} {path} -> {response.status_code} {json.dumps(response.json())}")
                if path == "/users":
                    user_id = response.json()["id"]
            response = http.get(f"/users/{user_id}")
            print(f"GET /users/{user_id} -> {response.status_code} {json.dumps(response.json())}")
            response = http.get("/users")
            count = len(response.json())
            print(f"GET /users -> {response.status_code} ({count} user{'s' * (count != 1)})")
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
