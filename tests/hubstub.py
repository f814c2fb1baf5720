"""A local stand-in for the Hugging Face Hub (``HF_ENDPOINT``): serves one folder as one model
repo through the routes huggingface_hub's downloads use (repo info, tree listing, HEAD/GET on
``resolve`` with Range). Test-only: the real hub is not reachable from CI.

``stall_after[name] = n`` makes the first GET of that file send n bytes and then hang, so a test
can kill the downloader mid-file and check that the next run resumes with a Range request.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse


class HubStub:
    def __init__(self, folder: Path, repo: str, sha: str = "0123456789abcdef0123456789abcdef01234567") -> None:
        self.folder, self.repo, self.sha = folder, repo, sha
        self.stall_after: dict[str, int] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, file, Range header)
        self.authorization: set[str | None] = set()  # Authorization headers seen
        self.stalled = threading.Event()  # set once a stalled file has sent its bytes
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HubStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.rglob("*") if p.is_file())

    def _entry(self, p: Path) -> dict[str, Any]:
        data = p.read_bytes()
        entry: dict[str, Any] = {
            "type": "file",
            "path": p.relative_to(self.folder).as_posix(),
            "size": len(data),
            "oid": hashlib.sha1(data).hexdigest(),
        }
        if p.suffix == ".safetensors":
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _missing(self) -> None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_HEAD(self) -> None:
                hub.authorization.add(self.headers.get("Authorization"))
                self._file(head=True)

            def do_GET(self) -> None:
                hub.authorization.add(self.headers.get("Authorization"))
                path = urlparse(self.path).path
                api = f"/api/models/{hub.repo}"
                if path.startswith(api + "/revision/"):
                    siblings = [{"rfilename": e["path"]} for e in map(hub._entry, hub.files())]
                    self._json({"id": hub.repo, "modelId": hub.repo, "sha": hub.sha, "private": False, "siblings": siblings})
                elif path.startswith(api + "/tree/"):
                    self._json([hub._entry(p) for p in hub.files()])
                else:
                    self._file(head=False)

            def _file(self, head: bool) -> None:
                m = re.fullmatch(rf"/{re.escape(hub.repo)}/resolve/[^/]+/(.+)", unquote(urlparse(self.path).path))
                target = hub.folder / m.group(1) if m else None
                if target is None or not target.is_file():
                    self._missing()
                    return
                name = m.group(1) if m else ""
                rng = self.headers.get("Range")
                hub.requests.append(("HEAD" if head else "GET", name, rng))
                data = target.read_bytes()
                entry = hub._entry(target)
                etag = entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]
                start = 0
                if rng and not head:
                    start = int(re.fullmatch(r"bytes=(\d+)-\d*", rng).group(1))  # type: ignore[union-attr]
                body = data[start:]
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", hub.sha)
                self.send_header("ETag", f'"{etag}"')
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(body)))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if head:
                    return
                stall = hub.stall_after.pop(name, None)
                if stall is not None:
                    self.wfile.write(body[:stall])
                    self.wfile.flush()
                    hub.stalled.set()
                    hub._release.wait(60)  # hang until the test kills the client (or ends)
                    self.close_connection = True
                    return
                self.wfile.write(body)

        return Handler
