"""The secrets the local Neon hands out survive being typed on a command line."""

import re

import httpx

from neonflow.local.postgres import new_password, new_secret
from neonflow.local.service import LocalNeonInfo

# A leading "-" makes `neonctl --api-key -Xy…` read the key as a flag ("Not enough arguments
# following: api-key"); Neon's own keys and passwords are letters and digits after a prefix.
SHAPE = re.compile(r"[a-z]+_[A-Za-z0-9]+")


def test_generated_secrets_are_letters_and_digits_after_a_prefix():
    samples = [new_password() for _ in range(500)] + [new_secret("napi_", 64) for _ in range(500)]
    assert all(SHAPE.fullmatch(s) for s in samples), [s for s in samples if not SHAPE.fullmatch(s)]
    assert len(set(samples)) == len(samples)


def test_the_api_key_and_role_passwords_have_neons_shape(local_neon: LocalNeonInfo):
    assert re.fullmatch(r"napi_[A-Za-z0-9]{64}", local_neon.token)
    headers = {"Authorization": f"Bearer {local_neon.token}"}
    base = f"{local_neon.api_host}/projects/{local_neon.project_id}"
    with httpx.Client(base_url=base, headers=headers) as http:
        branch = http.get("/branches").raise_for_status().json()["branches"][0]
        roles = http.get(f"/branches/{branch['id']}/roles").raise_for_status().json()["roles"]
        for role in roles:
            password = http.get(f"/branches/{branch['id']}/roles/{role['name']}/reveal_password")
            assert SHAPE.fullmatch(password.raise_for_status().json()["password"])
