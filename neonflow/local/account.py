"""The API key's user, as Neon's ``GET /users/me`` gives it (neonctl ``me``, the SDKs' ``me()``).

The local Neon has one user, the owner of its one project: no limits, no sign-in accounts.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from neonflow.local.engine import LocalNeon

ADDRESS = ("city", "country", "line1", "line2", "postal_code", "state")


def register(api: Blueprint, neon: LocalNeon) -> None:

    @api.get("/api/v2/users/me")
    def me() -> Response:
        return jsonify(
            {
                "id": "local",
                "email": "local@localhost.localdomain",
                "login": "local",
                "name": "local",
                "last_name": "",
                "image": "",
                "plan": "free",
                "active_seconds_limit": 0,
                "projects_limit": 1,
                "branches_limit": 0,
                "max_autoscaling_limit": 0,
                "auth_accounts": [],
                # neon-api (Python) requires it; a free account that pays nothing.
                "billing_account": {
                    "state": "active",
                    "payment_source": {"type": "none"},
                    "subscription_type": "free_v2",
                    "payment_method": "none",
                    "quota_reset_at_last": neon.project()["consumption_period_start"],
                    "name": "local",
                    "email": "local@localhost.localdomain",
                    **{f"address_{part}": "" for part in ADDRESS},
                },
            }
        )
