"""Where artefacts live: a directory (a mounted share, or what a static server publishes) or an
HTTP(S) server that takes PUT (WebDAV, an object store's upload endpoint). Reads are by URL."""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from agent.errors import FleetError

UPLOAD_TOKEN_ENV = "AGENT_FLEET_UPLOAD_TOKEN"
CHUNK = 1 << 20


def is_http(location: str) -> bool:
    return urllib.parse.urlsplit(location).scheme in ("http", "https")


def url_of(location: str, relative: str) -> str:
    """The URL of `relative` under a destination (a directory becomes a file:// URL)."""
    if is_http(location):
        return location.rstrip("/") + "/" + relative
    return (Path(location).expanduser().resolve() / relative).as_uri()


def put(location: str, relative: str, source: Path) -> None:
    """Store `source` as `relative` under `location`: atomically in a directory (readers never
    see half a file), or with an HTTP PUT (bearer token from $AGENT_FLEET_UPLOAD_TOKEN)."""
    if is_http(location):
        _http_put(url_of(location, relative), source)
        return
    target = Path(location).expanduser() / relative
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as exc:
        raise FleetError(f"cannot write {target}: {exc.strerror or exc}") from None


def _http_put(url: str, source: Path) -> None:
    headers = {"Content-Type": "application/octet-stream",
               "Content-Length": str(source.stat().st_size)}  # fmt: skip
    if token := os.environ.get(UPLOAD_TOKEN_ENV):
        headers["Authorization"] = f"Bearer {token}"
    with open(source, "rb") as body:
        request = urllib.request.Request(url, data=body, method="PUT", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise FleetError(f"PUT {url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise FleetError(f"PUT {url}: {getattr(exc, 'reason', exc)}") from None


def fetch(url: str, target: Path, max_bytes: int, timeout_s: float) -> None:
    """Download `url` (http, https or file) into `target`, refusing more than `max_bytes`."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https", "file"):
        raise FleetError(f"artefact URL {url!r}: only http(s):// and file:// are fetched")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, \
                open(target, "wb") as out:  # fmt: skip
            received = 0
            while block := response.read(CHUNK):
                received += len(block)
                if received > max_bytes:
                    raise FleetError(f"{url} is larger than {max_bytes >> 20} MiB "
                                     "(fleet.max_artefact_mb)")  # fmt: skip
                out.write(block)
    except urllib.error.HTTPError as exc:
        raise FleetError(f"GET {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise FleetError(f"GET {url}: {getattr(exc, 'reason', None) or exc}") from None
