"""A connection's transport that keeps what is written: for the micro benchmarks that
drive a connection without sockets, and for the tests that do (tests/conftest.py)."""

from __future__ import annotations

from typing import Any


class RecordingTransport:
    """What a connection writes to, kept in ``written``: the caller reads the responses
    back."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.write = self.written.append

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else None

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
