"""The one small HTTP client (dataset builders, release files, PyPI archives): retries, rate limit, paging, an
on-disk response cache, and :func:`fetch_file` for single files (release CSVs, ``--from`` URLs) checked by sha256
and re-validated.

Every response body is cached under ``cache_dir("live", <namespace>)`` keyed by the URL and its parameters (secret
parameters such as API keys are left out of the key and of anything recorded). Retryable statuses (429 and 5xx) are
retried with exponential backoff, honouring ``Retry-After``; anything else that is not a 200 is a
:class:`WorldprobeError` naming the URL. Every download, retries included, ends within an overall time limit
(:func:`download_deadline`): a server that trickles bytes cannot keep it open.
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
from tqdm.auto import tqdm

import worldprobe
from worldprobe import config
from worldprobe.checksums import read_record, sha256_of, write_record
from worldprobe.errors import WorldprobeError
from worldprobe.workspace import cache_dir

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
USER_AGENT = f"worldprobe/{worldprobe.__version__} (research toolkit; python-requests)"
CHUNK = 1 << 16


def download_deadline() -> float:
    """Seconds one download may take in all, retries included: ``$WORLDPROBE_DOWNLOAD_TIMEOUT`` or the default."""
    text = os.environ.get(config.DOWNLOAD_TIMEOUT_ENV)
    if not text:
        return config.DEFAULT_DOWNLOAD_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:
        raise WorldprobeError(f"${config.DOWNLOAD_TIMEOUT_ENV} is {text!r}, not a positive number of seconds",
                              field=config.DOWNLOAD_TIMEOUT_ENV)  # fmt: skip
    return seconds


def _too_slow(shown: str, limit: float, received: int) -> WorldprobeError:
    return WorldprobeError(
        f"download did not finish within {limit:g} s ({received:,} bytes received)", file=shown,
        hint=f"the server is stalled or too slow; try again later, or raise ${config.DOWNLOAD_TIMEOUT_ENV}",
    )  # fmt: skip


def _first_bytes(response: requests.Response, size: int = 200) -> str:
    """The start of an error response's body (one read at most), for the message; the response is closed."""
    try:
        return response.raw.read1(size, decode_content=True).decode("utf-8", "replace")
    except (requests.RequestException, OSError, ValueError):
        return ""
    finally:
        response.close()


def read_body(
    response: requests.Response, *, shown: str, ends_at: float, limit: float, sink: Callable[[bytes], Any] | None = None
) -> bytes:
    """The body of a streamed response, read chunk by chunk until the monotonic time ``ends_at`` (then a
    WorldprobeError). Chunks go to ``sink`` when given (and b"" is returned), else they are joined."""
    parts: list[bytes] = []
    received = 0
    try:
        while chunk := response.raw.read1(CHUNK, decode_content=True):
            received += len(chunk)
            if sink is None:
                parts.append(chunk)
            else:
                sink(chunk)
            if time.monotonic() > ends_at:
                raise _too_slow(shown, limit, received)
    except (requests.RequestException, OSError, ValueError) as error:  # urllib3 errors are OSError/ValueError kinds
        if time.monotonic() > ends_at:
            raise _too_slow(shown, limit, received) from None
        raise WorldprobeError(f"download broke off after {received:,} bytes: {type(error).__name__}", file=shown,
                              hint="check the network connection and try again") from None  # fmt: skip
    finally:
        response.close()
    return b"".join(parts)


@dataclass(frozen=True)
class HttpSettings:
    """How patient and how polite a client is. Builders take overrides from ``BuildOptions.extra['http']``."""

    min_interval: float = 1.0  # seconds between two network requests (the rate limit)
    max_retries: int = 5  # retries after the first attempt, for 429/5xx and connection errors
    backoff: float = 1.0  # first backoff in seconds; doubles with every retry
    max_wait: float = 120.0  # no single wait (Retry-After or backoff) is longer than this
    timeout: float = 120.0  # seconds one network read may wait
    deadline: float | None = None  # seconds for a whole request, retries included (None: download_deadline())
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
        limit = self.settings.deadline or download_deadline()
        ends_at = time.monotonic() + limit
        for attempt in range(self.settings.max_retries + 1):
            self._respect_rate_limit()
            remaining = ends_at - time.monotonic()
            if remaining <= 0:
                raise _too_slow(shown, limit, 0)
            try:
                response = self.session.get(url, params=params, headers=headers, stream=True,
                                            timeout=min(self.settings.timeout, remaining))  # fmt: skip
            except (requests.ConnectionError, requests.Timeout) as error:
                if time.monotonic() >= ends_at:
                    raise _too_slow(shown, limit, 0) from None
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
                return read_body(response, shown=shown, ends_at=ends_at, limit=limit)
            start = _first_bytes(response)
            if response.status_code not in RETRY_STATUSES:
                raise WorldprobeError(
                    f"HTTP {response.status_code} {response.reason}: {start!r}",
                    file=shown,
                    hint="check the URL, the query and any API key",
                )
            if attempt == self.settings.max_retries:
                raise WorldprobeError(
                    f"HTTP {response.status_code} after {attempt + 1} attempts", file=shown, hint="try again later"
                )
            asked = retry_after(response.headers.get("Retry-After"))
            wait = self._backoff(attempt) if asked is None else asked
            if time.monotonic() + min(wait, self.settings.max_wait) >= ends_at:
                raise _too_slow(shown, limit, 0)
            self._wait(wait)
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


@dataclass(frozen=True)
class FetchedFile:
    """A file downloaded by :func:`fetch_file` (or reused from its cache) and how it was checked."""

    path: Path
    url: str
    sha256: str
    etag: str | None = None
    last_modified: str | None = None
    how: str = "downloaded"  # downloaded | cached, sha256 checked | cached, server says unchanged

    def record(self) -> dict[str, Any]:
        """The facts a build report keeps about this input."""
        return {"what": self.url, "sha256": self.sha256, "etag": self.etag, "last_modified": self.last_modified,
                "fetched": self.how}  # fmt: skip


def fetch_file(url: str, dest: Path, *, sha256: str | None = None, revalidate: bool = True) -> FetchedFile:
    """``url`` as the local file ``dest``, downloaded within the overall time limit and checked.

    With ``sha256`` the cached copy is used when it has that checksum (no network), and a download must have it.
    Without, the cached copy is re-validated with the server (``If-None-Match`` / ``If-Modified-Since`` from the
    recorded ETag / Last-Modified; 304 keeps it, after checking it still has its recorded sha256); a server that sends
    neither validator is asked for the whole file again. ``revalidate=False`` trusts a cached copy whose sha256 matches
    its record (for URLs whose content cannot change, such as a pinned commit). Each download is recorded next to
    ``dest`` (``<name>.json``: url, sha256, ETag, Last-Modified).
    """
    record_path = dest.with_name(dest.name + ".json")
    record = read_record(record_path) if dest.exists() else None
    if record is not None and record.get("url") != url:
        record = None
    headers = {"User-Agent": USER_AGENT}
    if record is not None:
        cached_sha = sha256_of(dest)
        intact = cached_sha == record.get("sha256")
        if sha256 is not None and cached_sha == sha256:
            return _fetched(dest, url, cached_sha, record, "cached, sha256 checked")
        if sha256 is None and intact and not revalidate:
            return _fetched(dest, url, cached_sha, record, "cached, sha256 checked")
        if sha256 is None and intact:
            if record.get("etag"):
                headers["If-None-Match"] = record["etag"]
            if record.get("last_modified"):
                headers["If-Modified-Since"] = record["last_modified"]
    offline = (f"offline? pass --sha256 {record['sha256']} to use the cached copy" if record is not None
               else "offline? pass --from a local copy")  # fmt: skip
    response, ends_at, limit = _open(url, headers, offline)
    if response.status_code == 304 and len(headers) > 1:
        response.close()
        return _fetched(dest, url, str(record["sha256"]), record, "cached, server says unchanged")
    if response.status_code != 200:
        reason = f"HTTP {response.status_code} {response.reason}"
        response.close()
        raise WorldprobeError(f"download failed: {reason}", file=url,
                              hint="check the URL; offline? pass --from a local copy")  # fmt: skip
    digest = hashlib.sha256()
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")
    total = int(response.headers.get("Content-Length") or 0) or None
    with open(tmp, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False) as bar:

        def sink(chunk: bytes) -> None:
            out.write(chunk)
            digest.update(chunk)
            bar.update(len(chunk))

        try:
            read_body(response, shown=url, ends_at=ends_at, limit=limit, sink=sink)
        except BaseException:
            out.close()
            tmp.unlink(missing_ok=True)
            raise
    actual = digest.hexdigest()
    if sha256 is not None and actual != sha256:
        tmp.unlink()
        raise WorldprobeError(f"checksum mismatch: the download has sha256 {actual}, expected {sha256}", file=url,
                              hint="the download is corrupt or the file on the server changed")  # fmt: skip
    os.replace(tmp, dest)
    fresh = {"url": url, "sha256": actual, "bytes": dest.stat().st_size, "etag": response.headers.get("ETag"),
             "last_modified": response.headers.get("Last-Modified")}  # fmt: skip
    write_record(record_path, fresh)
    return _fetched(dest, url, actual, fresh, "downloaded")


def _fetched(dest: Path, url: str, sha256: str, record: dict[str, Any], how: str) -> FetchedFile:
    return FetchedFile(dest, url, sha256, record.get("etag"), record.get("last_modified"), how)


def _open(url: str, headers: dict[str, str], offline_hint: str) -> tuple[requests.Response, float, float]:
    """A streamed GET of ``url`` started within the overall time limit: (response, monotonic end, limit)."""
    limit = download_deadline()
    ends_at = time.monotonic() + limit
    try:
        response = requests.get(url, headers=headers, stream=True, timeout=min(60.0, limit))
    except requests.Timeout:
        raise _too_slow(url, limit, 0) from None
    except requests.RequestException as error:
        raise WorldprobeError(f"download failed: {type(error).__name__}", file=url, hint=offline_hint) from None
    return response, ends_at, limit
