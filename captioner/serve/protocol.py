"""Slow clients cannot hold the server: uvicorn's HTTP protocol with a header timeout.

uvicorn closes an idle keep-alive connection after `timeout_keep_alive`, but it waits forever for a connection's
first request line and headers, and for the headers of a next request once its first bytes arrived: a client that
sends a byte a second holds a connection (and its memory) for as long as it likes. `with_header_timeout` wraps
uvicorn's protocol class (httptools where installed, else h11) so that a connection whose next request has not
started (its headers complete) within `seconds` of the connection or of the previous response is closed. The body
of a request is the request handler's business: `POST /caption` reads it within the request timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any


def with_header_timeout(seconds: float) -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class HeaderTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]  # uvicorn declares a variable (h11 or httptools)
        def connection_made(self, transport: Any) -> None:  # asyncio's transport
            super().connection_made(transport)
            self._arm_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_timer()

        def _arm_header_timer(self) -> None:
            self.loop.call_later(seconds, self._close_if_no_request_since, self.cycle)

        def _close_if_no_request_since(self, cycle: object) -> None:
            # a request whose headers completed made a new cycle; the same one, answered (or none at all), means
            # no next request started in time; a request still being answered is never cut off
            idle = cycle is None or getattr(cycle, "response_complete", True)
            if self.cycle is cycle and idle and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol
