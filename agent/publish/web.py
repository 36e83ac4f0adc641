"""The agent's local HTTP endpoint (off by default, 127.0.0.1 when on): Prometheus metrics on
`/metrics`, and a read-only page on `/` with each source's health, fps and last snapshot, the
recent decisions with their crops, and the gallery's identities with one image each. The page
is one HTML file with its own CSS and script (no external assets) that polls `/api/state`.
Bound beyond localhost, every request needs the token (`Authorization: Bearer TOKEN` or
`?token=TOKEN`)."""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebView:
    """What the server shows, as functions the agent provides (called from server threads)."""

    state: Callable[[], dict]  # health, sources, recent decisions (JSON-ready)
    metrics_text: Callable[[], bytes]  # Prometheus exposition
    snapshot: Callable[[str], bytes | None]  # a source's last decided crop (JPEG)
    crop: Callable[[str], bytes | None]  # a recent decision's crop by event id (JPEG)
    identity_image: Callable[[str], Path | None]  # one enrolled image of an identity


class WebServer:
    def __init__(self, host: str, port: int, view: WebView, token: str | None):
        self.view = view
        self.token = token
        handler = type("Handler", (_Handler,), {"server_view": view, "token": token})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> WebServer:
        self.thread.start()
        log.info("HTTP on http://%s:%d/ (metrics on /metrics)", *self.address)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    server_view: WebView
    token: str | None

    def log_message(self, format: str, *args) -> None:
        log.debug("http %s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if not self._allowed(url.query):
            self._send(401, b"token required\n", "text/plain", {"WWW-Authenticate": "Bearer"})
            return
        view, path = self.server_view, url.path
        try:
            if path == "/":
                self._send(200, PAGE.encode(), "text/html; charset=utf-8")
            elif path == "/metrics":
                self._send(200, view.metrics_text(), "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/api/state":
                self._send(200, json.dumps(view.state()).encode(), "application/json")
            elif path.startswith("/snapshot/"):
                self._image(view.snapshot(unquote(path.removeprefix("/snapshot/"))))
            elif path.startswith("/crop/"):
                self._image(view.crop(unquote(path.removeprefix("/crop/"))))
            elif path.startswith("/identity/"):
                found = view.identity_image(unquote(path.removeprefix("/identity/")))
                self._image(_thumbnail(found) if found is not None else None)
            else:
                self._send(404, b"not found\n", "text/plain")
        except Exception:  # a bad request or a vanished file must not take the server down
            log.exception("http %s failed", path)
            self._send(500, b"internal error\n", "text/plain")

    def _allowed(self, query: str) -> bool:
        if self.token is None:
            return True
        given = parse_qs(query).get("token", [""])[0]
        header = self.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            given = header.removeprefix("Bearer ")
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _image(self, data: bytes | None) -> None:
        if data is None:
            self._send(404, b"no image\n", "text/plain")
        else:
            self._send(200, data, "image/jpeg")

    def _send(self, code: int, body: bytes, kind: str, headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


def _thumbnail(path: Path, side: int = 160) -> bytes | None:
    import cv2

    image = cv2.imread(str(path))
    if image is None:
        return None
    scale = side / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return data.tobytes() if ok else None


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>agent</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .2em} h2{font-size:1.05em;margin:1.4em 0 .5em}
.meta{color:#666} table{border-collapse:collapse;background:#fff}
td,th{padding:.35em .7em;border-bottom:1px solid #eee;text-align:left;vertical-align:middle}
img{max-height:72px;max-width:120px;border-radius:3px;background:#ddd}
.ok{color:#0a7d32}.bad{color:#b3261e} .grid{display:flex;flex-wrap:wrap;gap:.8em}
.card{background:#fff;padding:.5em;border-radius:4px;text-align:center;width:130px}
</style></head><body>
<h1>agent <span id="device"></span></h1>
<div class="meta" id="summary">loading...</div>
<h2>Sources</h2>
<table><thead><tr><th>source</th><th>health</th><th>fps</th><th>frames</th>
<th>dropped</th><th>last snapshot</th></tr></thead><tbody id="sources"></tbody></table>
<h2>Recent decisions</h2>
<table><thead><tr><th>time</th><th>source</th><th>identity</th><th>score</th><th>track</th>
<th>crop</th></tr></thead><tbody id="decisions"></tbody></table>
<h2>Gallery</h2><div class="grid" id="gallery"></div>
<script>
const token = new URLSearchParams(location.search).get("token");
function url(path, extra) { const u = new URL(path, location.href);
  if (token) u.searchParams.set("token", token);
  for (const [k, v] of Object.entries(extra || {})) u.searchParams.set(k, v); return u; }
function cell(row, text) { const td = row.insertCell(); td.textContent = text; return td; }
function image(td, src) { const img = document.createElement("img"); img.src = src;
  img.alt = ""; img.onerror = () => img.remove(); td.appendChild(img); }
async function refresh() {
  const state = await (await fetch(url("/api/state"))).json();
  document.getElementById("device").textContent = state.device_id;
  document.getElementById("summary").textContent = "state " + state.state + ", model " +
    state.model + ", gallery v" + state.gallery_version + ", " + state.events + " events";
  const sources = document.getElementById("sources"); sources.replaceChildren();
  for (const s of state.sources) { const r = sources.insertRow();
    cell(r, s.id); cell(r, s.health).className = s.health === "ok" ? "ok" : "bad";
    cell(r, s.fps.toFixed(1)); cell(r, s.frames); cell(r, s.dropped);
    image(r.insertCell(), url("/snapshot/" + encodeURIComponent(s.id), {t: state.events})); }
  const decisions = document.getElementById("decisions"); decisions.replaceChildren();
  for (const d of state.decisions) { const r = decisions.insertRow(); r.className = "decision";
    cell(r, new Date(d.ts * 1000).toLocaleTimeString()); cell(r, d.source_id);
    cell(r, d.identity); cell(r, d.score.toFixed(3)); cell(r, d.track_id || "");
    image(r.insertCell(), url("/crop/" + encodeURIComponent(d.event_id))); }
  const gallery = document.getElementById("gallery");
  if (!gallery.childElementCount) for (const g of state.gallery) {
    const card = document.createElement("div"); card.className = "card";
    image(card, url("/identity/" + encodeURIComponent(g.identity)));
    const name = document.createElement("div"); name.textContent = g.identity + " (" +
      g.images + ")"; card.appendChild(name); gallery.appendChild(card); }
}
refresh(); setInterval(refresh, 2000);
</script></body></html>
"""
