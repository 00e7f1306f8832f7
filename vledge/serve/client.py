"""A small client of `vledge serve` on the standard library (http.client): one kept-alive connection per
client, so give each thread its own."""

from __future__ import annotations

import http.client
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit

import numpy as np

from vledge.errors import ServiceError


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str

    def json(self):
        return json.loads(self.body)


def encode_multipart(fields: dict[str, str | Sequence[str]] | None = None,
                     files: Sequence[tuple[str, str, bytes]] = ()) -> tuple[bytes, str]:
    """``(body, content_type)`` of a multipart/form-data request; ``files``: (field, filename, bytes)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, values in (fields or {}).items():
        for value in [values] if isinstance(values, str) else values:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, filename, data in files:
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n")
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class Client:
    """``Client("http://127.0.0.1:8765").classify(open("cat.jpg", "rb").read(), ["a cat", "a dog"])``."""

    def __init__(self, url: str, timeout: float = 30.0):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ServiceError(f"expected an http://host:port URL, got {url!r}")
        self.host, self.port, self.timeout = parts.hostname, parts.port or 80, timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> Reply:
        """One request; the connection is reopened once if the server had closed the kept-alive one."""
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=body, headers=headers or {})
                response = self._conn.getresponse()
                data = response.read()
                if response.getheader("connection", "").lower() == "close":
                    self.close()
                return Reply(response.status, data, response.getheader("content-type", ""))
            except (ConnectionError, http.client.RemoteDisconnected, http.client.CannotSendRequest):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _ok(self, reply: Reply):
        if reply.status >= 400:
            try:
                detail = reply.json()
            except ValueError:
                detail = {"error": reply.body[:200].decode(errors="replace")}
            raise ServiceError(f"the service answered {reply.status}: {detail.get('error')}", reply.status,
                               detail.get("reason"))
        return reply.json()

    def classify(self, image: bytes | str | os.PathLike, labels: Sequence[str] | None = None,
                 top_k: int = 5) -> list[tuple[str, float]]:
        fields = {"top_k": str(top_k)}
        if labels is not None:
            fields["labels"] = json.dumps(list(labels))
        body, content_type = encode_multipart(fields, [("image", "image", _bytes(image))])
        reply = self.request("POST", "/v1/classify", body, {"Content-Type": content_type})
        return [(x["label"], x["score"]) for x in self._ok(reply)["labels"]]

    def embed_image(self, images: bytes | Sequence[bytes]) -> np.ndarray:
        items = [images] if isinstance(images, (bytes, str, os.PathLike)) else list(images)
        body, content_type = encode_multipart(None, [("image", f"image{i}", _bytes(x)) for i, x in enumerate(items)])
        reply = self.request("POST", "/v1/embed/image", body, {"Content-Type": content_type})
        return np.asarray(self._ok(reply)["embeddings"], dtype=np.float32)

    def embed_text(self, texts: str | Sequence[str]) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        reply = self.request("POST", "/v1/embed/text", json.dumps({"texts": texts}).encode(),
                             {"Content-Type": "application/json"})
        return np.asarray(self._ok(reply)["embeddings"], dtype=np.float32)

    def health(self) -> dict:
        return self._ok(self.request("GET", "/healthz"))


def _bytes(image) -> bytes:
    return image if isinstance(image, bytes) else Path(image).read_bytes()
