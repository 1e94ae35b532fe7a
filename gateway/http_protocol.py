"""uvicorn's httptools protocol with a cap on the size of a request's head.

httptools (llhttp) buffers a request line and headers of any size: one client could send megabytes
of headers, or a URL whose fragments uvicorn joins by repeated concatenation, and the gateway would
hold them all before the app could refuse. This protocol counts the bytes of each request's head
as they arrive and answers 431 once they pass ``MAX_HEAD_BYTES``, closing the connection. The
body is not counted here: ``BodyLimitMiddleware`` bounds it.
"""

from __future__ import annotations

from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# As much as nginx allows by default (4 buffers of 8 KiB), doubled: OpenAI clients send ~1 KiB.
MAX_HEAD_BYTES = 64 * 1024
_END_OF_HEAD = b"\r\n\r\n"


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        # The head's last bytes so far, so an end of head split across two reads is still seen.
        self._tail = b""

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            seen = self._tail + data
            end = seen.find(_END_OF_HEAD)
            if end == -1:
                self._head_bytes += len(data)
                self._tail = seen[-(len(_END_OF_HEAD) - 1) :]
            else:
                self._head_bytes += end + len(_END_OF_HEAD) - len(self._tail)
                self._in_head = False
                self._tail = b""
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse()
                return
        super().data_received(data)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # The next request on this connection starts with its head.
        self._in_head = True
        self._head_bytes = 0

    def _refuse(self) -> None:
        body = orjson.dumps(
            {
                "error": {
                    "message": f"the request line and headers are larger than {MAX_HEAD_BYTES} "
                    "bytes",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "request_header_fields_too_large",
                }
            }
        )
        head = (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n"
        )
        self.transport.write(head + body)
        self.transport.close()
        self._in_head = False
