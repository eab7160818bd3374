"""The one small HTTP client of the live builders: retries, rate limit, paging and an on-disk response cache.

Every response body is cached under ``cache_dir("live", <namespace>)`` keyed by the URL and its parameters (secret
parameters such as API keys are left out of the key and of anything recorded). Retryable statuses (429 and 5xx) are
retried with exponential backoff, honouring ``Retry-After``; anything else that is not a 200 is a
:class:`WorldprobeError` naming the URL.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests

import worldprobe
from worldprobe.errors import WorldprobeError
from worldprobe.workspace import cache_dir

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
USER_AGENT = f"worldprobe/{worldprobe.__version__} (research toolkit; python-requests)"


@dataclass(frozen=True)
class HttpSettings:
    """How patient and how polite a client is. Builders take overrides from ``BuildOptions.extra['http']``."""

    min_interval: float = 1.0  # seconds between two network requests (the rate limit)
    max_retries: int = 5  # retries after the first attempt, for 429/5xx and connection errors
    backoff: float = 1.0  # first backoff in seconds; doubles with every retry
    max_wait: float = 120.0  # no single wait (Retry-After or backoff) is longer than this
    timeout: float = 120.0  # seconds for one request
    use_cache: bool = True

    def updated(self, overrides: Mapping[str, Any] | None) -> HttpSettings:
        """A copy with the given fields replaced (unknown names are an error)."""
        if not overrides:
            return self
        unknown = sorted(set(overrides) - set(self.__dataclass_fields__))
        if unknown:
            raise WorldprobeError(
                f"unknown HTTP setting(s) {unknown}", field="http", hint=f"known: {sorted(self.__dataclass_fields__)}"
            )
        return HttpSettings(**{**self.__dict__, **overrides})


@dataclass
class Fetched:
    """One response body and where it came from."""

    url: str  # the URL with its public parameters (no secrets)
    body: bytes
    from_cache: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    def json(self) -> Any:
        """The body parsed as JSON, or a clear error naming the URL."""
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            snippet = self.body[:80].decode("utf-8", "replace")
            raise WorldprobeError(
                f"response is not JSON ({error}); it starts with {snippet!r}", file=self.url
            ) from None


@dataclass
class HttpClient:
    """A rate-limited, retrying, caching GET client for one API (``namespace`` names its cache folder)."""

    namespace: str
    settings: HttpSettings = field(default_factory=HttpSettings)
    headers: dict[str, str] = field(default_factory=dict)
    secret_params: frozenset[str] = frozenset()
    sleep: Callable[[float], None] = time.sleep
    session: requests.Session = field(default_factory=requests.Session)
    waits: list[float] = field(default_factory=list)  # every wait taken (rate limit excluded), for reports and tests
    fetched: list[Fetched] = field(default_factory=list)  # every response returned, in order
    _last_request: float = field(default=float("-inf"), repr=False)

    def get(self, url: str, params: Mapping[str, Any] | None = None) -> Fetched:
        """GET ``url`` with ``params``: from the cache when present, else from the network (and then cached)."""
        params = dict(params or {})
        path, shown = self._cache_path(url, params)
        if self.settings.use_cache and path.exists():
            fetched = Fetched(shown, path.read_bytes(), from_cache=True)
        else:
            fetched = Fetched(shown, self._download(url, params, shown), from_cache=False)
            if self.settings.use_cache:
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_bytes(fetched.body)
                tmp.replace(path)
        self.fetched.append(fetched)
        return fetched

    def get_json(
        self, url: str, params: Mapping[str, Any] | None = None, check: Callable[[Any, str], Any] | None = None
    ) -> tuple[Any, Fetched]:
        """GET and parse JSON, then ``check(payload, shown_url)`` (which returns what to use, or raises).

        A body that is not JSON or fails the check is removed from the cache before the error propagates, so a
        bad response is never served again from the cache.
        """
        fetched = self.get(url, params)
        try:
            payload = fetched.json()
            return (check(payload, fetched.url) if check else payload), fetched
        except WorldprobeError:
            self._cache_path(url, dict(params or {}))[0].unlink(missing_ok=True)
            raise

    def _cache_path(self, url: str, params: Mapping[str, Any]) -> tuple[Path, str]:
        """The cache file of a request and the URL as shown in errors and reports (both without secrets)."""
        public = sorted((k, str(v)) for k, v in params.items() if k not in self.secret_params)
        key = hashlib.sha256(json.dumps([url, public]).encode()).hexdigest()
        shown = f"{url}?{urlencode(public)}" if public else url
        return cache_dir("live", self.namespace) / f"{key[:32]}.body", shown

    def _download(self, url: str, params: Mapping[str, Any], shown: str) -> bytes:
        headers = {"User-Agent": USER_AGENT, **self.headers}
        for attempt in range(self.settings.max_retries + 1):
            self._respect_rate_limit()
            try:
                response = self.session.get(url, params=params, headers=headers, timeout=self.settings.timeout)
            except (requests.ConnectionError, requests.Timeout) as error:
                if attempt == self.settings.max_retries:
                    raise WorldprobeError(
                        f"request failed after {attempt + 1} attempts: {type(error).__name__}",
                        file=shown,
                        hint="check the network connection, or point the base URL elsewhere",
                    ) from None
                self._wait(self._backoff(attempt))
                continue
            except requests.RequestException as error:  # a bad URL or similar: retrying cannot help
                raise WorldprobeError(f"request not possible: {error}", file=shown) from None
            if response.status_code == 200:
                return response.content
            if response.status_code not in RETRY_STATUSES:
                raise WorldprobeError(
                    f"HTTP {response.status_code} {response.reason}: {response.text[:200]!r}",
                    file=shown,
                    hint="check the URL, the query and any API key",
                )
            if attempt == self.settings.max_retries:
                raise WorldprobeError(
                    f"HTTP {response.status_code} after {attempt + 1} attempts", file=shown, hint="try again later"
                )
            asked = retry_after(response.headers.get("Retry-After"))
            self._wait(self._backoff(attempt) if asked is None else asked)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        return self.settings.backoff * 2**attempt

    def _wait(self, seconds: float) -> None:
        seconds = min(max(seconds, 0.0), self.settings.max_wait)
        self.waits.append(seconds)
        self.sleep(seconds)

    def _respect_rate_limit(self) -> None:
        pause = self._last_request + self.settings.min_interval - time.monotonic()
        if pause > 0:
            self.sleep(pause)
        self._last_request = time.monotonic()

    def record(self, *, what: str, licence: str, attribution: str = "") -> dict[str, Any]:
        """A BuildReport ``inputs`` entry summarising every response fetched so far (one sha256 over all bodies)."""
        digest = hashlib.sha256()
        for fetched in self.fetched:
            digest.update(fetched.sha256.encode())
        return {
            "what": what,
            "urls": [f.url for f in self.fetched],
            "responses": len(self.fetched),
            "from_cache": sum(f.from_cache for f in self.fetched),
            "sha256": digest.hexdigest(),
            "response_sha256": [f.sha256 for f in self.fetched],
            "retry_waits_s": list(self.waits),
            "licence": licence,
            "attribution": attribution,
        }


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None when absent/unreadable."""
    if value is None or not value.strip():
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def require(payload: Any, path: str, *, url: str, kind: type | tuple[type, ...] = object) -> Any:
    """``payload[a][b]...`` for ``path`` "a.b...", or a WorldprobeError naming the URL and the missing part."""
    value = payload
    walked: list[str] = []
    for part in path.split("."):
        walked.append(part)
        if not isinstance(value, Mapping) or part not in value:
            raise WorldprobeError(
                f"malformed response: no '{'.'.join(walked)}' (expected '{path}')",
                file=url,
                field=path,
                hint="the API may have changed, or the service returned an error page",
            )
        value = value[part]
    if not isinstance(value, kind):
        raise WorldprobeError(
            f"malformed response: '{path}' is {type(value).__name__}, expected {getattr(kind, '__name__', kind)}",
            file=url,
            field=path,
        )
    return value


def paginate(fetch_page: Callable[[int, int], list[Any]], *, page_size: int, limit: int | None = None) -> Iterator[Any]:
    """Rows from ``fetch_page(offset, size)`` page after page until a short page (or ``limit`` rows)."""
    offset = 0
    while limit is None or offset < limit:
        size = page_size if limit is None else min(page_size, limit - offset)
        rows = fetch_page(offset, size)
        yield from rows
        if len(rows) < size:
            return
        offset += size


def base_url(name: str, default: str, env: str, extra: Mapping[str, Any]) -> str:
    """The base URL of an API: ``extra['urls'][name]``, else ``$env``, else ``default`` (trailing slash removed)."""
    chosen = (extra.get("urls") or {}).get(name) or os.environ.get(env) or default
    return str(chosen).rstrip("/")
