"""The one exception both WebSocket codec implementations raise.

It lives in its own pure-Python module so that ``websocket_codec`` and
``websocket_codec_py`` raise the very same class, and ``except FrameError`` works
whichever implementation the selector in ``mcpfast_ext`` picked.
"""

from __future__ import annotations


class FrameError(Exception):
    """A frame that violates RFC 6455 section 5; the connection must be failed (7.1.7).

    ``code`` is the close code to send (7.4.1): 1002 for a protocol error, 1009 for a
    payload larger than the endpoint accepts. ``frames`` are the frames the same ``feed``
    completed before the bad one: the peer sent them, and they may still need answers.
    """

    def __init__(self, code: int, reason: str,
                 frames: list[tuple[bool, int, bytes]] | None = None) -> None:
        # code and reason go to Exception.args so that pickle and copy, which rebuild an
        # exception as cls(*args), get back the two arguments __init__ requires.
        super().__init__(code, reason)
        self.code = code
        self.reason = reason
        self.frames: list[tuple[bool, int, bytes]] = frames if frames is not None else []

    def __str__(self) -> str:
        return f"{self.reason} (close code {self.code})"
