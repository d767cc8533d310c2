"""Structured logging: human-readable text or one JSON object per line."""

from __future__ import annotations

import logging
import re
import sys
import time

import msgspec

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.worker is not None:
            entry["worker"] = self.worker
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry).decode()


_CONTROL = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")


class TextFormatter(logging.Formatter):
    """A record a line: control characters in its message (a URI or name a client
    chose, say) are escaped, so that nobody can write what reads as another line of the
    log, an audit line say (CWE-117). A traceback still follows on lines of its own."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        if _CONTROL.search(record.message):
            record.message = _CONTROL.sub(
                lambda m: m.group().encode("unicode_escape").decode("ascii"), record.message)
        return super().formatMessage(record)


class _ClientErrorsInOneLine(logging.Filter):
    """aiohttp logs a malformed request to the admin port as an error with its
    traceback: the client's fault, not the gateway's, and a client could fill the log
    with them. Such a record becomes one INFO line naming what was wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        # Imported here: the record comes from aiohttp, loaded by then; the bridge and
        # the CLI, which log too, do not load it.
        from aiohttp.http_exceptions import HttpProcessingError
        if isinstance(exc, HttpProcessingError):
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {exc.message}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def configure(level: str, fmt: str, worker: int | None = None) -> None:
    """``worker``: the index of a worker process (supervisor.py), which every line then
    names; the workers share the supervisor's standard error."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(worker))
    else:
        who = "" if worker is None else f"worker {worker} "
        handler.setFormatter(TextFormatter(
            f"%(asctime)s %(levelname)-7s {who}%(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _ClientErrorsInOneLine) for f in server.filters):
        server.addFilter(_ClientErrorsInOneLine())
