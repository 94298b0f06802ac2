"""gRPC-Web as a browser speaks it, over plain HTTP/1.1: one request, the reply's frames."""

from __future__ import annotations

import http.client
from collections.abc import Mapping
from dataclasses import dataclass, field

ALLOWED_ORIGIN = "http://localhost:5173"
# gRPC-Web framing: one flag byte, a 4-byte big-endian length, the payload.
DATA_FRAME = 0x00
TRAILER_FRAME = 0x80


@dataclass
class GrpcWebReply:
    http_status: int
    headers: dict[str, str]
    messages: list[bytes] = field(default_factory=list)
    trailers: dict[str, str] = field(default_factory=dict)

    @property
    def grpc_status(self) -> str | None:
        """The status from the trailer frame, or from the headers of a trailers-only reply."""
        return self.trailers.get("grpc-status", self.headers.get("grpc-status"))


def grpc_web_call(
    listener: str,
    method: str,
    message: bytes,
    origin: str = ALLOWED_ORIGIN,
    metadata: Mapping[str, str] | None = None,
) -> GrpcWebReply:
    """POST one gRPC-Web (binary) request as a browser would and split the reply's frames."""
    host, port = listener.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(
            "POST",
            method,
            body=bytes([DATA_FRAME]) + len(message).to_bytes(4, "big") + message,
            headers={
                "content-type": "application/grpc-web+proto",
                "accept": "application/grpc-web+proto",
                "x-grpc-web": "1",
                "x-user-agent": "cortex-core-tests",
                "origin": origin,
                **(metadata or {}),
            },
        )
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    reply = GrpcWebReply(response.status, {k.lower(): v for k, v in response.getheaders()})
    offset = 0
    while offset < len(body):
        flag = body[offset]
        length = int.from_bytes(body[offset + 1 : offset + 5], "big")
        payload = body[offset + 5 : offset + 5 + length]
        assert len(payload) == length, f"truncated gRPC-Web frame in {body!r}"
        offset += 5 + length
        if flag & TRAILER_FRAME:
            for line in payload.decode().split("\r\n"):
                if line:
                    name, _, value = line.partition(":")
                    reply.trailers[name.strip().lower()] = value.strip()
        else:
            reply.messages.append(payload)
    return reply
