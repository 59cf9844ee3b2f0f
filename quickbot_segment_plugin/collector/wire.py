"""Reading HTTP off a socket under a total deadline, and the numbers HTTP puts in text.

A per-receive timeout does not bound a request: a client that sends one header line every
10 s never trips a 30 s timeout and holds its connection (and its thread) forever. The
reader below gives every phase of a request one deadline for all of its receives.

HTTP numbers (Content-Length, chunk sizes, X-Retry-Count, query values) are ASCII digits
only. Python's `int()` and `str.isdigit()` also accept `0x3c`, `+0_3c`, spaces and
Unicode digits such as `²`, which lets two parsers disagree about where a body ends (the
root of request smuggling) or turns a typo into a 500.
"""

from __future__ import annotations

import io
import re
import socket
import time

_DECIMAL = re.compile(r"[0-9]{1,18}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")


def ascii_decimal(text: str) -> int | None:
    """`text` as a whole number when it is 1-18 ASCII digits (surrounding blanks allowed), else None."""
    stripped = text.strip(" \t")
    return int(stripped) if _DECIMAL.fullmatch(stripped) else None


def ascii_hex(data: bytes) -> int | None:
    """A chunk-size field (1-15 ASCII hex digits, surrounding blanks allowed), else None."""
    stripped = data.strip(b" \t")
    return int(stripped, 16) if _HEX.fullmatch(stripped) else None


class DeadlineReader(io.RawIOBase):
    """The connection's receive side, with one deadline shared by all receives.

    `deadline` is a `time.monotonic()` instant; None means "no deadline beyond
    `idle_timeout` per receive". Past the deadline a read raises TimeoutError.
    """

    def __init__(self, connection: socket.socket, idle_timeout: float) -> None:
        super().__init__()
        self._connection = connection
        self.idle_timeout = idle_timeout
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if self.deadline is None:
            timeout = self.idle_timeout
        else:
            timeout = self.deadline - time.monotonic()
            if timeout <= 0:
                raise TimeoutError("the request did not arrive in time")
        self._connection.settimeout(timeout)
        return self._connection.recv_into(buffer)
