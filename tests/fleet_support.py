"""A real HTTP file server for fleet tests: GET serves a directory, PUT stores into it (what a
WebDAV share or an object store's upload endpoint does), optionally behind a bearer token."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Handler(SimpleHTTPRequestHandler):
    token: str | None = None

    def log_message(self, *args) -> None:
        pass

    def do_PUT(self) -> None:
        if self.token and self.headers.get("Authorization") != f"Bearer {self.token}":
            self.send_error(401)
            return
        target = Path(self.translate_path(self.path))
        target.parent.mkdir(parents=True, exist_ok=True)
        length = int(self.headers["Content-Length"])
        target.write_bytes(self.rfile.read(length))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()


class FileServer:
    def __init__(self, root: Path, token: str | None = None):
        root.mkdir(parents=True, exist_ok=True)
        handler = functools.partial(type("Handler", (_Handler,), {"token": token}),
                                    directory=str(root))  # fmt: skip
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
