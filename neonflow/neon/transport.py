"""The HTTP side of the Neon API client: one ``httpx.Client``, each call bounded by
``[neon] timeout`` with its retries, error answers mapped to :mod:`neonflow.errors`, answers
parsed into the models. :class:`~neonflow.neon.client.NeonClient` adds the API's calls."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

import neonflow
from neonflow import errors
from neonflow.neon import retry
from neonflow.urls import mask_password

M = TypeVar("M", bound=BaseModel)
Json = dict[str, Any]


class OutcomeUnknown(errors.NetworkError):
    """A non-idempotent request failed after it may have reached the server."""

    def __init__(self, message: str, attempt: int) -> None:
        super().__init__(message)
        self.attempt = attempt


class Transport:
    """Requests to Neon API v2 for one project, on a single ``httpx.Client``.

    Retries 423/429/503 and connect errors with jittered backoff (``Retry-After`` honoured), and
    read errors for GET/HEAD/DELETE only; maps error answers to :mod:`neonflow.errors`.
    ``timeout`` bounds each call, its retries included: a host that accepts and never answers
    costs ``timeout`` seconds, not ``timeout`` per try.
    """

    def __init__(
        self,
        api_host: str,
        api_key: str,
        project_id: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 60,
        max_retries: int = 5,
        backoff_base: float = 0.25,
        backoff_cap: float = 10,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        try:
            url = httpx.URL(api_host)
        except httpx.InvalidURL:
            raise errors.ConfigError(f"api_host is not a valid URL: {api_host!r}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise errors.ConfigError(f"api_host must be an http(s) URL, not {api_host!r}")
        self.api_host = api_host.rstrip("/")
        self.project_id = project_id
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.request_count = 0
        """HTTP requests sent so far (a request refused at connect time is not counted)."""
        self._sleep = sleep
        # The deadline of the call under way (see _budget), per thread: threads may share us.
        self._calls = threading.local()
        self._secret = api_key
        self._host = url.netloc.decode("ascii")
        self._project = f"/projects/{seg(project_id)}"
        self._http = httpx.Client(
            base_url=self.api_host,
            transport=transport,
            timeout=timeout,
            # Plain http (the local Neon) never uses TLS: skip loading the CA bundle (~30 ms).
            verify=url.scheme != "http",
            headers={
                "Authorization": f"Bearer {api_key}",
                "Accept": "application/json",
                "Content-Type": "application/json",
                "User-Agent": f"neonflow/{neonflow.__version__}",
            },
        )

    def __repr__(self) -> str:
        return f"NeonClient(api_host={self.api_host!r}, project_id={self.project_id!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _json(
        self,
        method: str,
        path: str,
        *,
        params: Json | None = None,
        json: Json | None = None,
        attempt: int = 0,
    ) -> Json:
        return self._decode(self._request(method, path, params=params, json=json, attempt=attempt))

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Json | None = None,
        json: Json | None = None,
        attempt: int = 0,
    ) -> httpx.Response:
        """Send with bounded retries; return a 2xx/3xx answer or raise a neonflow error."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        with self._budget():
            return self._send(method, path, query, json, attempt)

    @contextmanager
    def _budget(self) -> Iterator[None]:
        """Bound what runs inside to ``timeout`` seconds, unless an enclosing call already does."""
        if getattr(self._calls, "deadline", None) is not None:
            yield
            return
        self._calls.deadline = time.monotonic() + self.timeout
        try:
            yield
        finally:
            self._calls.deadline = None

    def _time_left(self, delay: float = 0.0) -> float:
        """Seconds of the budget left after waiting ``delay`` (0 when it would be spent)."""
        deadline: float | None = getattr(self._calls, "deadline", None)
        if deadline is None:
            return self.timeout
        return max(0.0, deadline - time.monotonic() - delay)

    def _send(
        self, method: str, path: str, query: Json, json: Json | None, attempt: int
    ) -> httpx.Response:
        while True:
            left = self._time_left()
            if left <= 0:  # spent by an enclosing call (a create's look-up after a lost answer)
                ran_out = httpx.ReadTimeout("no time left for another try")
                raise self._network_error(method, path, ran_out)
            try:
                response = self._http.request(
                    method, path, params=query, json=json, timeout=httpx.Timeout(left)
                )
            except retry.NOT_SENT_ERRORS as exc:
                delay = self._backoff(attempt)
                if attempt >= self.max_retries or not self._time_left(delay):
                    raise self._network_error(method, path, exc) from exc
            except retry.MAYBE_SENT_ERRORS as exc:
                self.request_count += 1
                if method not in retry.IDEMPOTENT_METHODS:
                    raise OutcomeUnknown(
                        f"{method} {path}: the connection to {self._host} broke before the answer "
                        f"({_reason(exc)}); the outcome is unknown",
                        attempt,
                    ) from exc
                delay = self._backoff(attempt)
                if attempt >= self.max_retries or not self._time_left(delay):
                    raise self._network_error(method, path, exc) from exc
            except httpx.RequestError as exc:
                raise self._network_error(method, path, exc) from exc
            else:
                self.request_count += 1
                if response.status_code < 400:
                    return response
                error = self._api_error(method, path, response)
                minimum = retry.retry_after(response.headers) or 0.0
                delay = max(minimum, self._backoff(attempt))
                if (
                    response.status_code not in retry.RETRY_STATUSES
                    or attempt >= self.max_retries
                    or minimum > retry.MAX_RETRY_AFTER
                    or not self._time_left(delay)
                ):
                    raise error
            self._sleep(delay)
            attempt += 1

    def _backoff(self, attempt: int) -> float:
        return retry.backoff_delay(attempt, self.backoff_base, self.backoff_cap)

    def _decode(self, response: httpx.Response) -> Json:
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise errors.NeonAPIError(
                f"the Neon API at {self._host} answered with something other than a JSON object",
                status=response.status_code,
                request_id=response.headers.get("x-request-id", ""),
                method=response.request.method,
                path=response.request.url.path,
            )
        return data

    def _string(self, data: Json, key: str) -> str:
        value = data.get(key)
        if not isinstance(value, str):
            raise errors.NeonAPIError(
                f"unexpected answer from the Neon API at {self._host}: no {key}"
            )
        return value

    def _parse(self, model: type[M], data: Any) -> M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(part) for part in err["loc"]) or "(root)"
            raise errors.NeonAPIError(
                f"unexpected answer from the Neon API at {self._host}: "
                f"{model.__name__}.{where}: {err['msg']}"
            ) from None

    def _api_error(self, method: str, path: str, response: httpx.Response) -> errors.NeonflowError:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        message = str(body.get("message") or "").strip()
        if not message:
            message = response.reason_phrase or f"HTTP {status}"
            text = response.text.strip()
            snippet = text.splitlines()[0][:200] if text else ""
            if snippet and not snippet.startswith(("<", "{")):
                message += f": {snippet}"
        if status == 404 and not body.get("message"):
            # Neon's 404s are JSON with a message; a bare one ("File not found") comes from a
            # server that is not a Neon API at all: a configuration error, not a missing branch.
            return errors.ConfigError(
                self._redact(
                    f"{mask_password(self.api_host)} is not a Neon API: {method} {path} "
                    "answered HTTP 404 "
                    f"without Neon's error body ({message}); check [neon] api_host "
                    "(Neon cloud's is https://console.neon.tech/api/v2)"
                )
            )
        request_id = body.get("request_id") or response.headers.get("x-request-id", "")
        return _error_class(status)(
            self._redact(message),
            status=status,
            code=self._redact(str(body.get("code") or "")),
            request_id=self._redact(str(request_id)),
            method=method,
            path=path,
        )

    def _network_error(
        self, method: str, path: str, exc: httpx.RequestError
    ) -> errors.NetworkError:
        if isinstance(exc, retry.NOT_SENT_ERRORS):
            what = f"cannot reach the Neon API at {self._host}"
        elif isinstance(exc, httpx.TimeoutException):
            what = (
                f"the Neon API at {self._host} did not answer {method} {path} within "
                f"{self.timeout:g} s ([neon] timeout)"
            )
        else:
            what = f"{method} {path} to the Neon API at {self._host} failed"
        return errors.NetworkError(self._redact(f"{what} ({_reason(exc)})"))

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text


def _error_class(status: int) -> type[errors.NeonAPIError]:
    if status in (401, 403):
        return errors.AuthError
    if status == 404:
        return errors.NotFoundError
    if status in (409, 412, 422):
        return errors.ConflictError
    if status == 423:
        return errors.LockedError
    if status == 429:
        return errors.RateLimitError
    if status >= 500:
        return errors.ServerError
    return errors.NeonAPIError


def _reason(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def seg(value: str) -> str:
    return quote(value, safe="")
