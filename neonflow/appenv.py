"""The app's database variables: one URL (``[app] env_var``) or several (``[app.env]``).

``[app.env]`` maps a variable name to a template over the fields of the branch's URI::

    POSTGRES_SERVER = "{host}"
    POSTGRES_DB = "{database}"

The same templates turn a branch URI into the values neonflow writes and exports, and turn the
values an env file holds back into a URI, so that neonflow can tell which branch the app points at.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

FIELDS = ("url", "host", "port", "user", "password", "database", "sslmode")
_IN_URL = ("user", "password", "database")
# Scheme prefixes of a PostgreSQL URL, with or without a SQLAlchemy driver.
_POSTGRES_SCHEME = re.compile(r"^(postgres|postgresql)(\+[A-Za-z0-9_]+)?$")


def parse_template(template: str) -> list[tuple[str, str | None]]:
    """The template as (literal text, field or None) pairs; a bad template is a ValueError."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{template!r}: {exc} (write a literal brace as {{{{ or }}}})") from None
    out: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in parts:
        if field is not None:
            if field not in FIELDS:
                raise ValueError(
                    f"{template!r}: unknown field {{{field}}} (known: "
                    + ", ".join(f"{{{f}}}" for f in FIELDS)
                    + ")"
                )
            if spec or conversion:
                raise ValueError(f"{template!r}: no format spec or conversion in {{{field}}}")
        out.append((literal, field))
    return out


def validate(templates: Mapping[str, str]) -> None:
    """Raise ValueError unless the templates identify a branch: ``{url}``, or host and database."""
    fields: set[str] = set()
    for name, template in templates.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"{name!r} is not an environment variable name")
        fields.update(f for _, f in parse_template(template) if f)
    if "url" not in fields and not {"host", "database"} <= fields:
        raise ValueError(
            "the variables must carry {url}, or both {host} and {database}: otherwise neonflow "
            "cannot tell which branch the app points at"
        )


def url_fields(url: str) -> dict[str, str]:
    """The template fields of a PostgreSQL URI (user, password and database percent-decoded)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    return {
        "url": url,
        "host": parts.hostname or "",
        "port": str(parts.port or 5432),
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "database": unquote(parts.path.lstrip("/")),
        "sslmode": query.get("sslmode", "prefer"),
    }


def with_driver(url: str, driver: str | None) -> str:
    """``url`` with the scheme ``postgresql+<driver>`` (``postgresql`` when None), options fitted.

    asyncpg takes ``ssl`` rather than libpq's ``sslmode`` and knows no ``channel_binding``.
    """
    parts = urlsplit(url)
    scheme = f"postgresql+{driver}" if driver else "postgresql"
    query = parse_qsl(parts.query, keep_blank_values=True)
    if driver == "asyncpg":
        query = [("ssl" if k == "sslmode" else k, v) for k, v in query if k != "channel_binding"]
    return urlunsplit(parts._replace(scheme=scheme, query=urlencode(query)))


def driver_of(url: str | None) -> str | None:
    """The SQLAlchemy driver a PostgreSQL URL names (``asyncpg``, ``psycopg2``…), else None."""
    if not url or "://" not in url:
        return None
    match = _POSTGRES_SCHEME.match(url.split("://", 1)[0])
    return match[2][1:] if match and match[2] else None


def is_postgres(url: str | None) -> bool:
    return bool(url and "://" in url and _POSTGRES_SCHEME.match(url.split("://", 1)[0]))


@dataclass(frozen=True)
class AppVariables:
    """The variables the app reads its database from, as name → template."""

    templates: dict[str, str]

    @classmethod
    def single(cls, name: str) -> AppVariables:
        return cls({name: "{url}"})

    @property
    def names(self) -> list[str]:
        return list(self.templates)

    @property
    def label(self) -> str:
        """How to name them to a person: ``DATABASE_URL`` or ``POSTGRES_SERVER, POSTGRES_DB``."""
        return ", ".join(self.templates)

    def values(self, url: str, driver: str | None = None) -> dict[str, str]:
        """The variables for the branch at ``url``; ``{url}`` gets ``driver`` when one is given."""
        fields = url_fields(url)
        if driver is not None:
            fields["url"] = with_driver(url, driver)
        return {name: _render(template, fields) for name, template in self.templates.items()}

    def url(self, values: Mapping[str, str | None]) -> str | None:
        """The URI the values point at (enough of it to compare), or None if they don't say."""
        fields: dict[str, str] = {}
        for name, template in self.templates.items():
            value = values.get(name)
            if value is None:
                continue
            match = _matcher(template).fullmatch(value)
            if match is None:
                continue
            found = {k: v for k, v in match.groupdict().items() if v is not None}
            if "://" in template:
                found = {k: unquote(v) if k in _IN_URL else v for k, v in found.items()}
            fields.update(found)
        if fields.get("url"):
            return fields["url"]
        if not fields.get("host") or "database" not in fields:
            return None
        user = quote(fields.get("user", ""), safe="")
        password = quote(fields.get("password", ""), safe="")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        port = fields.get("port") or "5432"
        database = quote(fields["database"], safe="")
        query = f"?sslmode={fields['sslmode']}" if fields.get("sslmode") else ""
        return f"postgresql://{auth}{fields['host']}:{port}/{database}{query}"


def _render(template: str, fields: dict[str, str]) -> str:
    # Inside a URL template the credentials and the database go percent-encoded.
    in_url = "://" in template
    out: list[str] = []
    for literal, field in parse_template(template):
        out.append(literal)
        if field is not None:
            value = fields[field]
            out.append(quote(value, safe="") if in_url and field in _IN_URL else value)
    return "".join(out)


def _matcher(template: str) -> re.Pattern[str]:
    pattern: list[str] = []
    seen: set[str] = set()
    for literal, field in parse_template(template):
        pattern.append(re.escape(literal))
        if field is None:
            continue
        if field in seen:
            pattern.append(f"(?P={field})")
        else:
            pattern.append(f"(?P<{field}>.*?)")
            seen.add(field)
    return re.compile("".join(pattern), re.DOTALL)
