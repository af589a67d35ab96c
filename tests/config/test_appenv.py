"""The app's variables: templates to values and back, drivers, and what a template must carry."""

from __future__ import annotations

import pytest

from neonflow import appenv
from neonflow.appenv import AppVariables

URL = "postgresql://neondb_owner:p%40ss@ep-cool-1.us-east-2.aws.neon.tech/neondb?sslmode=require"

PARTS = AppVariables(
    {
        "POSTGRES_SERVER": "{host}",
        "POSTGRES_PORT": "{port}",
        "POSTGRES_USER": "{user}",
        "POSTGRES_PASSWORD": "{password}",
        "POSTGRES_DB": "{database}",
    }
)


def test_parts_are_filled_from_the_uri_and_read_back() -> None:
    values = PARTS.values(URL)
    assert values == {
        "POSTGRES_SERVER": "ep-cool-1.us-east-2.aws.neon.tech",
        "POSTGRES_PORT": "5432",
        "POSTGRES_USER": "neondb_owner",
        "POSTGRES_PASSWORD": "p@ss",  # decoded: the app gets the password itself
        "POSTGRES_DB": "neondb",
    }
    back = PARTS.url(values)
    assert back is not None and back.startswith("postgresql://neondb_owner:p%40ss@ep-cool-1.")
    assert back.endswith(":5432/neondb")


def test_a_url_template_with_text_around_it() -> None:
    variables = AppVariables({"DB": "{url}", "DB_HOST_PORT": "{host}:{port}"})
    values = variables.values(URL, driver="asyncpg")
    assert values["DB"].startswith("postgresql+asyncpg://")
    assert "ssl=require" in values["DB"] and "sslmode" not in values["DB"]
    assert values["DB_HOST_PORT"] == "ep-cool-1.us-east-2.aws.neon.tech:5432"
    assert variables.url(values) == values["DB"]


def test_values_the_templates_do_not_match_say_nothing() -> None:
    assert PARTS.url({"POSTGRES_SERVER": "db"}) is None
    assert AppVariables.single("DATABASE_URL").url({"DATABASE_URL": None}) is None


@pytest.mark.parametrize(
    ("templates", "words"),
    [
        ({"X": "{hostname}"}, "unknown field {hostname}"),
        ({"X": "{host!r}", "Y": "{database}"}, "no format spec"),
        ({"X": "{host"}, "brace"),
        ({"X": "{user}", "Y": "{password}"}, "cannot tell which branch"),
        ({"bad name": "{url}"}, "not an environment variable name"),
    ],
)
def test_templates_that_cannot_work_are_refused(templates: dict[str, str], words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("{", r"\{").replace("}", r"\}")):
        appenv.validate(templates)


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql+asyncpg://h/db", "asyncpg"),
        ("postgresql+psycopg2://h/db", "psycopg2"),
        ("postgres://h/db", None),
        ("driver://user:pass@localhost/dbname", None),
        ("sqlite:///app.db", None),
        (None, None),
    ],
)
def test_driver_of(url: str | None, driver: str | None) -> None:
    assert appenv.driver_of(url) == driver
