"""Mutation testing for mcpfast: break one thing at a time, see whether the tests notice.

Usage (``make mutate`` runs the default, focused selection)::

    python scripts/mutate.py [--topics routing,timeout] [--modules PATH ...]
                             [--functions NAME ...] [--limit N] [--only ID ...]
                             [--tests TEST ...] [--jobs N] [--timeout S] [--list]
                             [--report FILE]

Why a runner of our own: the gateway tests start the gateway as a subprocess
(``python -m mcpfast serve``), so a mutant must be visible to every process a test
starts, not only to the test process (mutmut's trampolines and cosmic-ray's import
hooks live in the test process). Each worker therefore runs in its own copy of the
source tree under a temporary directory: a mutant is written into that copy's file,
the mapped tests run there (``-x``, with ``PYTHONPATH`` and the working directory on
the copy, bytecode writing off so that no stale ``.pyc`` outlives a mutant), and the
file is put back. The tree the runner was started from is only read.

A mutant is one small change at one place, chosen from an AST walk of the selected
functions: a comparison flipped (``==``/``!=``, ``<``/``>=``, ``is``/``is not``,
``in``/``not in``), ``and``/``or`` swapped, a ``not`` dropped, an ``if`` whose body
never runs, a number changed (an int plus one, a float doubled), ``True``/``False``
swapped, ``+``/``-`` and ``*``/``/`` swapped, a call statement, ``raise`` or
``continue``/``break`` replaced by ``pass``, a returned value replaced by ``None``.
Logging calls, docstrings, strings and ``assert`` statements are left alone: they are
not behaviour the tests promise (a log line that a test reads is the exception, and
is tested where it matters by reading the log).

Killed means a mapped test failed (or the run exceeded its time-out); survived means
every mapped test passed with the mutant in place. Survivors are printed with their
id (``path:line:col:operator``), and ``--only`` runs just those again.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import dataclasses
import fnmatch
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
COPY_IGNORE = shutil.ignore_patterns(
    ".venv", ".git", ".tools", "build", "dist", "*.egg-info", "__pycache__", ".mypy_cache",
    ".ruff_cache", ".benchmarks", ".pytest_cache", ".build.lock", "htmlcov")
LOG_NAMES = {"log", "logger", "logging", "_log"}

# The default selection: the code the issue names (routing, id mapping, cancellation,
# time-out, session ids, header validation), each with the tests that guard it, fastest
# first (a run stops at the first failure).
TOPICS: dict[str, dict[str, list[str]]] = {
    "routing": {
        "mcpfast/gateway/router.py": ["*"],
        "mcpfast/gateway/requests.py": ["Requests._express", "Requests._by_name",
                                        "Requests._routed_uri",
                                        "Requests._read", "Requests._complete",
                                        "Requests._rename"],
        "mcpfast/gateway/call.py": ["Request.ref", "Request.of_modern"],
    },
    "ids": {
        "mcpfast/protocol/jsonrpc.py": ["*"],
        "mcpfast/upstream/connection.py": ["Connection._on_response", "Connection.forward",
                                           "Connection.allocate_id",
                                           "Connection.pending_for_token"],
        "mcpfast/gateway/requests.py": ["Requests._forward",
                                        "Requests.forward", "Requests._forward_modern",
                                        "Requests._forward_legacy_to_modern"],
        "mcpfast/gateway/gateway.py": ["Gateway.id_taken"],
        "mcpfast/gateway/relay.py": ["Relay.answered",
                                     "Relay.upstream_notification[notifications/progress]",
                                     "Relay.reshape_response"],
    },
    "cancellation": {
        "mcpfast/upstream/connection.py": ["Connection.cancel"],
        "mcpfast/gateway/requests.py": ["Requests._client_notification"],
        "mcpfast/gateway/relay.py": ["Relay.abandoned"],
        "mcpfast/gateway/gateway.py": ["Gateway.close_session"],
        "mcpfast/transport/http_sessions.py": ["HttpSession.cancel", "Stream.lost",
                                               "ModernRequest.lost", "ModernRequest._finish"],
    },
    "timeout": {
        "mcpfast/upstream/connection.py": ["Connection.sweep", "Connection.deadline"],
        "mcpfast/gateway/sweeper.py": ["sweep_forever"],
        "mcpfast/gateway/relay.py": ["Relay.timed_out"],
    },
    "session-ids": {
        "mcpfast/protocol/session_ids.py": ["*"],
        "mcpfast/transport/streamable.py": ["Endpoint._session", "Endpoint.register",
                                            "Endpoint.unregister", "Endpoint._initialize"],
        "mcpfast/transport/http_sessions.py": ["HttpSession.headers"],
    },
    "headers": {
        "mcpfast/protocol/modern.py": ["decode_header_value", "check_unrepeated_headers",
                                       "check_headers", "_compare", "x_mcp_headers",
                                       "check_param_headers", "check_param_values",
                                       "_value_at", "_param_matches"],
        "mcpfast/transport/streamable.py": ["_AllowList.*", "Endpoint.refuse",
                                            "Endpoint.__init__", "Endpoint._modern"],
        "mcpfast/config.py": ["is_loopback"],
    },
}
TOPIC_TESTS: dict[str, list[str]] = {
    "routing": ["tests/ext/test_routing.py", "tests/gateway/test_express.py",
                "tests/gateway/test_guard_routing.py",
                "tests/gateway/test_multi_upstream.py", "tests/gateway/test_guard_ids.py"],
    "ids": ["tests/protocol/test_units.py", *[f"tests/transport/test_fuzz.py::{name}" for name in (
                # jsonrpc.decode's own tests (nesting, UTF-8, the id of what is unread)
                "test_nesting_up_to_the_limit_is_read_and_beyond_it_is_a_parse_error",
                "test_brackets_in_strings_do_not_count_as_nesting",
                "test_unclosed_brackets_count_as_levels",
                "test_the_recursion_guard_when_depth_is_unlimited",
                "test_the_id_of_an_unread_message", "test_invalid_utf8_is_a_parse_error",
                "test_malformed_json_is_a_parse_error_even_when_its_start_has_the_wrong_shape",
                "test_valid_json_of_the_wrong_shape_is_an_invalid_request",
                "test_a_pretty_printed_request_reaches_a_stdio_upstream_in_one_line")],
            "tests/gateway/test_guard_ids.py", "tests/gateway/test_guard_routing.py",
            "tests/gateway/test_guard_cancel.py",
            # The same functions forward rate-limited, logging and input-round requests.
            "tests/upstream/test_guard_upstream.py", "tests/gateway/test_rate_limit.py",
            "tests/gateway/test_modern_clients.py",
            "tests/upstream/test_upstream_lifecycle.py::test_calls_to_a_restarting_upstream_fail_fast",
            "tests/gateway/test_bridge_mrtr.py::test_modern_client_gets_input_required_and_retries",
            "tests/gateway/test_bridge_mrtr.py::test_legacy_client_answers_two_rounds_as_server_requests",
            "tests/gateway/test_bridge_mrtr.py::test_a_parked_call_outlives_the_connection_that_asked",
            "tests/transport/test_hardening.py::test_too_many_requests_in_flight_are_refused",
            "tests/transport/test_hardening.py::"
            "test_a_client_paused_for_a_congested_upstream_is_read_again_once_it_drains",
            "tests/transport/test_hardening.py::"
            "test_a_congested_upstream_stops_the_gateway_reading_its_clients"],
    "cancellation": ["tests/gateway/test_guard_cancel.py", "tests/gateway/test_modern_sessions.py",
                     "tests/gateway/test_bridge_mrtr.py::"
                     "test_cancel_or_disconnect_during_a_round_ends_the_call"],
    "timeout": ["tests/gateway/test_guard_cancel.py", "tests/transport/test_guard_idle.py",
                # The sweeper also samples the buffers (overload) and evicts refilled
                # rate-limit buckets.
                "tests/transport/test_hardening.py::"
                "test_new_requests_are_refused_while_the_process_buffers_too_much",
                "tests/gateway/test_rate_limit.py::test_buckets_of_identities_gone_quiet_are_dropped",
                "tests/upstream/test_upstream_lifecycle.py"],
    "session-ids": ["tests/protocol/test_session_ids.py", "tests/transport/test_guard_http.py",
                    # The per-address cap and the id age limit are the hardening work's.
                    "tests/transport/test_hardening.py::test_one_address_cannot_take_every_legacy_session",
                    "tests/transport/test_hardening.py::test_a_session_id_expires_at_its_maximum_age",
                    "tests/transport/test_hardening.py::"
                    "test_a_deleted_session_id_is_not_revived_by_a_restart",
                    "tests/transport/test_http_legacy.py"],
    "headers": ["tests/protocol/test_modern_protocol.py", "tests/transport/test_guard_headers.py",
                "tests/transport/test_guard_http.py", "tests/transport/test_http_modern.py",
                "tests/e2e/test_shutdown.py::test_http_gets_503_while_draining"],
}
# Tests that fail today because they expose an open production bug (reported, not
# xfailed): left out of mutation runs, which need a passing baseline. Remove an entry
# once the bug is fixed.
KNOWN_FAILING: list[str] = []
# For --modules outside the default selection: the tests of the package part.
PACKAGE_TESTS: dict[str, list[str]] = {
    "mcpfast/protocol/": ["tests/protocol/test_units.py",
                          "tests/protocol/test_modern_protocol.py",
                          "tests/protocol/test_protocol_websocket.py",
                          "tests/protocol/test_session_ids.py"],
    "mcpfast/transport/": ["tests/transport/test_guard_http.py",
                           "tests/transport/test_http_legacy.py",
                           "tests/transport/test_http_modern.py",
                           "tests/transport/test_gateway_websocket.py",
                           "tests/transport/test_gateway_unix.py"],
    "mcpfast/upstream/": ["tests/upstream/test_guard_upstream.py",
                          "tests/upstream/test_upstream_lifecycle.py",
                          "tests/upstream/test_modern_upstreams.py",
                          "tests/gateway/test_guard_cancel.py"],
    "mcpfast/gateway/": ["tests/ext/test_routing.py", "tests/gateway/test_chain.py",
                         "tests/gateway/test_guard_ids.py", "tests/gateway/test_guard_cancel.py",
                         "tests/gateway/test_multi_upstream.py",
                         "tests/transport/test_gateway_websocket.py",
                         "tests/upstream/test_upstream_lifecycle.py"],
}

COMPARE_SWAP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.GtE, ast.GtE: ast.Lt,
    ast.Gt: ast.LtE, ast.LtE: ast.Gt, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
    ast.In: ast.NotIn, ast.NotIn: ast.In,
}
BINOP_SWAP: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult, ast.Mod: ast.FloorDiv,
}


@dataclasses.dataclass
class Mutant:
    path: str
    function: str
    line: int
    col: int
    end_line: int
    end_col: int
    operator: str
    original: str
    replacement: str
    statement: bool
    tests: list[str]

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}:{self.col}:{self.operator}"

    def apply(self, source: str) -> str:
        """``source`` with this mutant in place. The line count stays the same (a node
        that spanned lines leaves blank lines after it), so tracebacks still point at
        the right lines."""
        lines = source.splitlines(keepends=True)
        first, last = lines[self.line - 1], lines[self.end_line - 1]
        before = first[:_char_col(first, self.col)]
        after = last[_char_col(last, self.end_col):]
        middle = self.replacement if self.statement else f"({self.replacement})"
        mutated = before + middle + after + "\n" * (self.end_line - self.line)
        return "".join(lines[:self.line - 1]) + mutated + "".join(lines[self.end_line:])


def _char_col(line: str, byte_col: int) -> int:
    """ast offsets count UTF-8 bytes; str slicing counts characters."""
    return len(line.encode()[:byte_col].decode(errors="ignore"))


@dataclasses.dataclass
class Named:
    """A hand-written break of one promised behaviour (issue 14's table and the README's
    claims), with the tests that must notice it: ``--named`` tries these. ``old`` must
    occur exactly once in ``path``; when the code has changed so that it does not, the
    mutant is reported stale, to be rewritten against the new code."""

    name: str
    path: str
    old: str
    new: str
    tests: list[str]
    build: bool = False
    """A compiled module (.pyx): the extension is rebuilt in the copy to try it."""
    function: str = "(named)"

    @property
    def id(self) -> str:
        return f"named:{self.name}"

    @property
    def original(self) -> str:
        return self.old.strip()

    @property
    def replacement(self) -> str:
        return self.new.strip()

    def apply(self, source: str) -> str:
        if source.count(self.old) != 1:
            raise StaleMutantError(f"{self.path} has {source.count(self.old)} copies of the code "
                              f"this mutant changes")
        return source.replace(self.old, self.new)


class StaleMutantError(Exception):
    pass


_ON_RESPONSE = '                    jsonrpc="2.0", id=pending.id, result=env.result, error=error)),'

NAMED: list[Named] = [
    Named("integer-ids-answered-as-floats", "mcpfast/gateway/relay.py", _ON_RESPONSE,
          _ON_RESPONSE.replace("id=pending.id", "id=float(pending.id) if "
                               "type(pending.id) is int else pending.id"),
          ["tests/gateway/test_guard_ids.py"]),
    Named("numeric-string-ids-answered-as-integers", "mcpfast/gateway/relay.py",
          _ON_RESPONSE, _ON_RESPONSE.replace(
              "id=pending.id", "id=int(pending.id) if isinstance("
              "pending.id, str) and pending.id.isdigit() else "
              "pending.id"), ["tests/gateway/test_guard_ids.py"]),
    Named("progress-token-sent-back-as-a-string", "mcpfast/gateway/relay.py",
          'params["progressToken"] = pending.progress_token\n',
          'params["progressToken"] = str(pending.progress_token)\n',
          ["tests/gateway/test_guard_ids.py"]),
    Named("cancellation-never-sent-upstream", "mcpfast/upstream/connection.py",
          """                self.notify("notifications/cancelled",
                            {"requestId": upstream_id, "reason": reason})""",
          """                pass""", ["tests/gateway/test_guard_cancel.py"]),
    Named("request-deadline-doubled", "mcpfast/upstream/connection.py",
          "return time.monotonic() + self._timeout", "return time.monotonic() + 2 * self._timeout",
          ["tests/gateway/test_guard_cancel.py"]),
    Named("restart-sleep-never-grows", "mcpfast/upstream/base.py",
          "await asyncio.sleep(backoff)", "await asyncio.sleep(self.config.restart_backoff)",
          ["tests/upstream/test_guard_upstream.py::test_restart_backoff_doubles_in_real_time"]),
    Named("separator-hard-coded", "mcpfast/gateway/router.py",
          'return f"{upstream.name}{self.separator}{name}"', 'return f"{upstream.name}__{name}"',
          ["tests/ext/test_routing.py", "tests/gateway/test_multi_upstream.py"]),
    Named("allow-list-unanchored-at-the-start", "mcpfast/transport/streamable.py",
          "verdict = self._regex.match(value) is not None",
          "verdict = self._regex.search(value) is not None",
          ["tests/transport/test_guard_http.py"]),
    Named("allow-list-unanchored-at-the-end", "mcpfast/transport/streamable.py",
          """'.*')})\\\\Z" for p in patterns)""", """'.*')})" for p in patterns)""",
          ["tests/transport/test_guard_http.py"]),
    Named("allowed-origins-ignored", "mcpfast/transport/streamable.py",
          "self._origins = _AllowList(self.config.allowed_origins)",
          'self._origins = _AllowList(["http://127.0.0.1:*", "http://localhost:*"])',
          ["tests/transport/test_guard_http.py"]),
    Named("allowed-hosts-ignored", "mcpfast/transport/streamable.py",
          "hosts = self.config.allowed_hosts", "hosts = None",
          ["tests/transport/test_guard_http.py"]),
    Named("loopback-host-rule-everywhere", "mcpfast/transport/streamable.py",
          "if hosts is None and is_loopback(listen.host):", "if hosts is None:",
          ["tests/transport/test_guard_http.py"]),
    Named("resumption-gap-check-removed", "mcpfast/transport/http_sessions.py",
          """            if after is not None and self.is_post:
                return False""", """            if False:
                return False""", ["tests/transport/test_guard_http.py"]),
    Named("replay-buffer-gap-check-removed", "mcpfast/protocol/sse.py",
          "if not events or events[0][0] > seq + 1:", "if not events:",
          ["tests/transport/test_guard_http.py"]),
    Named("resumption-repeats-an-event", "mcpfast/transport/http_sessions.py",
          "start = self.delivered if after is None else after\n",
          "start = self.delivered if after is None else max(0, after - 1)\n",
          ["tests/transport/test_http_legacy.py"]),
    Named("replay-events-ignored", "mcpfast/transport/http_sessions.py",
          "self.endpoint.config.replay_events)", "256)", ["tests/transport/test_guard_http.py"]),
    Named("replay-seconds-ignored", "mcpfast/transport/http_sessions.py",
          "limit = self.endpoint.config.replay_seconds", "limit = 3600.0",
          ["tests/transport/test_guard_http.py"]),
    Named("sse-retry-ms-ignored", "mcpfast/transport/http_sessions.py",
          """self.session.endpoint.config.sse_retry_ms))
        for seq, data in backlog:""", """1000))
        for seq, data in backlog:""", ["tests/transport/test_guard_http.py"]),
    Named("max-sessions-unchecked", "mcpfast/transport/streamable.py",
          "if len(self.sessions) >= self.config.max_sessions:", "if False:",
          ["tests/transport/test_guard_http.py"]),
    Named("mcp-param-headers-never-checked", "mcpfast/transport/streamable.py",
          'if method == "tools/call":\n                modern.check_param_headers',
          'if False:\n                modern.check_param_headers',
          ["tests/transport/test_guard_http.py"]),
    Named("no-upstream-for-a-uri-is-32602", "mcpfast/gateway/requests.py",
          "self.send_error(req.session, req.id, jsonrpc.RESOURCE_NOT_FOUND,",
          "self.send_error(req.session, req.id, jsonrpc.INVALID_PARAMS,",
          ["tests/gateway/test_multi_upstream.py"]),
    Named("stop-skips-sigterm", "mcpfast/upstream/stdio.py",
          "                self._signal_group(signal.SIGTERM)\n", "                pass\n",
          ["tests/e2e/test_shutdown.py"]),
    Named("no-503-while-draining", "mcpfast/transport/streamable.py",
          "if self.core.draining:\n            exchange.error(503,",
          "if False:\n            exchange.error(503,", ["tests/e2e/test_shutdown.py"]),
    Named("upstream-max-message-bytes-ignored", "mcpfast/upstream/stdio.py",
          "LineFramer(upstream.config.max_message_bytes)", "LineFramer(64 * 1024 * 1024)",
          ["tests/upstream/test_guard_upstream.py"]),
    Named("inherit-env-false-ignored", "mcpfast/upstream/stdio.py",
          "if config.inherit_env is True:", "if True:", ["tests/upstream/test_guard_upstream.py"]),
    Named("cwd-ignored", "mcpfast/upstream/stdio.py", "cwd=self.config.cwd,", "cwd=None,",
          ["tests/upstream/test_guard_upstream.py"]),
    Named("probe-waits-4-s", "mcpfast/upstream/base.py", "PROBE_TIMEOUT = 2.0",
          "PROBE_TIMEOUT = 4.0", ["tests/upstream/test_guard_upstream.py"]),
    Named("compiled-len-leaves-out-resources", "mcpfast_ext/routing_table.pyx",
          "return len(self._tools) + len(self._prompts) + len(self._resources)",
          "return len(self._tools) + len(self._prompts)", ["tests/ext/test_routing.py"],
          build=True),
    Named("compiled-add-refuses-duplicates-only-for-tools", "mcpfast_ext/routing_table.pyx",
          "        if name in table:\n            return False",
          "        if name in table and kind == 0:\n            return False",
          ["tests/ext/test_routing.py"], build=True),
]


class _Finder(ast.NodeVisitor):
    """Collects the mutants of one module inside the selected functions."""

    def __init__(self, path: str, source: str, patterns: list[str], tests: list[str]) -> None:
        self.path = path
        self.source = source
        self.patterns = patterns
        self.tests = tests
        self.stack: list[str] = []
        self.found: list[Mutant] = []
        self._selected_depth = 0
        self._branches: list[str] = []
        self._skip: set[int] = set()
        self.matched: set[str] = set()
        """The patterns that named a function here (a pattern that names none is stale)."""

    # -- scope ---------------------------------------------------------------------------
    def _scoped(self, node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.stack.append(node.name)
        qualname = ".".join(self.stack)
        is_function = not isinstance(node, ast.ClassDef)
        selected = False
        branches: list[str] = []
        for pattern in self.patterns if is_function else ():
            # "Function[text]": only the if/elif branch whose condition mentions text.
            name, _, branch = pattern.partition("[")
            if fnmatch.fnmatchcase(qualname, name):
                self.matched.add(pattern)
                if branch:
                    branches.append(branch.rstrip("]"))
                else:
                    selected = True
        if selected:
            self._selected_depth += 1
        saved, self._branches = self._branches, branches or self._branches
        body = node.body
        if is_function and body and isinstance(body[0], ast.Expr) and \
                isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            self._skip.add(id(body[0]))  # the docstring
        # Only the body: defaults and decorators are evaluated outside the function.
        for child in body:
            self.visit(child)
        if selected:
            self._selected_depth -= 1
        self._branches = saved
        self.stack.pop()

    visit_ClassDef = _scoped  # noqa: N815 - ast.NodeVisitor's naming
    visit_FunctionDef = _scoped  # noqa: N815
    visit_AsyncFunctionDef = _scoped  # noqa: N815

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        # A local variable's annotation is never evaluated: mutating it changes nothing.
        if node.value is not None:
            self.visit(node.value)

    @property
    def function(self) -> str:
        return ".".join(self.stack)

    def _add(self, node: ast.AST, operator: str, replacement: str,
             statement: bool = False) -> None:
        original = ast.get_source_segment(self.source, node) or ""
        self.found.append(Mutant(self.path, self.function, node.lineno, node.col_offset,
                                 node.end_lineno or node.lineno, node.end_col_offset or 0,
                                 operator, original, replacement, statement, self.tests))

    # -- what is never mutated -------------------------------------------------------------
    @staticmethod
    def _is_logging(call: ast.Call) -> bool:
        func = call.func
        if not isinstance(func, ast.Attribute):
            return False
        target = func.value
        while isinstance(target, ast.Attribute):
            if target.attr in LOG_NAMES or target.attr.endswith("_log"):
                return True
            target = target.value
        return isinstance(target, ast.Name) and target.id in LOG_NAMES

    def generic_visit(self, node: ast.AST) -> None:
        if isinstance(node, ast.JoinedStr | ast.Assert):
            return  # f-string parts and asserts are not mutated
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and \
                self._is_logging(node.value):
            return
        if id(node) in self._skip:
            return
        if isinstance(node, ast.If) and not self._selected_depth and self._branches and \
                any(b in (ast.get_source_segment(self.source, node.test) or "")
                    for b in self._branches):
            # The selected branch: its condition and body, not the elif/else after it.
            self._selected_depth += 1
            self._mutate(node)
            self.visit(node.test)
            for child in node.body:
                self.visit(child)
            self._selected_depth -= 1
            for child in node.orelse:
                self.visit(child)
            return
        if self._selected_depth:
            self._mutate(node)
        super().generic_visit(node)

    # -- the operators ---------------------------------------------------------------------
    def _mutate(self, node: ast.AST) -> None:
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                swap = COMPARE_SWAP.get(type(op))
                if swap is not None:
                    mutated = copy.deepcopy(node)
                    mutated.ops[i] = swap()
                    self._add(node, f"compare{i}:{type(op).__name__}->{swap.__name__}",
                              ast.unparse(mutated))
        elif isinstance(node, ast.BoolOp):
            other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            mutated = copy.deepcopy(node)
            mutated.op = other
            self._add(node, f"boolop:{type(node.op).__name__}->{type(other).__name__}",
                      ast.unparse(mutated))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            self._add(node, "drop-not", ast.unparse(node.operand))
        elif isinstance(node, ast.BinOp) and type(node.op) in BINOP_SWAP:
            swap = BINOP_SWAP[type(node.op)]
            mutated = copy.deepcopy(node)
            mutated.op = swap()
            self._add(node, f"binop:{type(node.op).__name__}->{swap.__name__}",
                      ast.unparse(mutated))
        elif isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool):
                self._add(node, f"constant:{value}->{not value}", repr(not value))
            elif isinstance(value, int):
                self._add(node, f"constant:{value}->{value + 1}", repr(value + 1))
            elif isinstance(value, float):
                self._add(node, f"constant:{value}->{value * 2}", repr(value * 2))
        elif isinstance(node, ast.If | ast.While | ast.IfExp) and \
                not isinstance(node.test, ast.Constant):  # a constant is mutated as one
            self._add(node.test, "condition->False", "False")
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call | ast.Await):
            self._add(node, "call->pass", "pass", statement=True)
        elif isinstance(node, ast.Raise | ast.Continue | ast.Break):
            self._add(node, f"{type(node).__name__.lower()}->pass", "pass", statement=True)
        elif isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and not node.value.value):
            # Not for a falsy constant: where False or 0 is returned, None reads the same.
            self._add(node, "return->None", "return None", statement=True)


def find_mutants(topics: list[str], modules: list[str], functions: list[str],
                 tests: list[str]) -> list[Mutant]:
    """The mutants of the selection, each with the tests mapped to it."""
    selection: dict[str, list[tuple[list[str], list[str]]]] = {}
    if modules:
        for pattern in modules:
            for path in sorted(ROOT.glob(pattern)):
                rel = path.relative_to(ROOT).as_posix()
                if not rel.endswith(".py"):
                    continue
                mapped = tests or next((t for prefix, t in PACKAGE_TESTS.items()
                                        if rel.startswith(prefix)), [])
                selection.setdefault(rel, []).append((functions or ["*"], mapped))
    else:
        for topic in topics:
            for rel, patterns in TOPICS[topic].items():
                chosen = [p for p in patterns if not functions or any(
                    fnmatch.fnmatchcase(p, f) or fnmatch.fnmatchcase(f, p) for f in functions)]
                if chosen:
                    selection.setdefault(rel, []).append((chosen, tests or TOPIC_TESTS[topic]))
    mutants: dict[str, Mutant] = {}
    for rel, entries in selection.items():
        source = (ROOT / rel).read_text()
        tree = ast.parse(source, rel)
        for patterns, mapped in entries:
            finder = _Finder(rel, source, patterns, mapped)
            finder.visit(tree)
            stale = [p for p in patterns if p not in finder.matched and not modules]
            if stale:
                raise SystemExit(f"TOPICS names {', '.join(stale)} in {rel}, which has no "
                                 "such function: the code moved; update scripts/mutate.py")
            for mutant in finder.found:
                known = mutants.get(mutant.id)
                if known is None:
                    mutants[mutant.id] = mutant
                else:  # selected by two topics: both topics' tests guard it
                    known.tests = list(dict.fromkeys(known.tests + mapped))
    return sorted(mutants.values(), key=lambda m: (m.path, m.line, m.col, m.operator))


@dataclasses.dataclass
class Outcome:
    mutant: Mutant | Named
    verdict: str  # killed | survived | timeout | error | stale
    seconds: float
    detail: str


class Worker:
    """One copy of the tree, where mutants are tried one at a time."""

    def __init__(self, base: Path, number: int, timeout: float) -> None:
        self.tree = base / f"w{number}"
        shutil.copytree(ROOT, self.tree, ignore=COPY_IGNORE, symlinks=True)
        self.timeout = timeout
        self.env = {**os.environ, "PYTHONPATH": str(self.tree), "PYTHONDONTWRITEBYTECODE": "1",
                    "MCPFAST_MUTATION_RUN": "1"}

    def build_extension(self) -> bool:
        done = subprocess.run([PYTHON, "setup.py", "--quiet", "build_ext", "--inplace"],
                              cwd=self.tree, capture_output=True,
                              env={**self.env, "MCPFAST_BUILD_EXTENSION": "yes"})
        return done.returncode == 0

    def pytest(self, tests: list[str]) -> tuple[str, float, str]:
        started = time.monotonic()
        deselect = [arg for test in KNOWN_FAILING for arg in ("--deselect", test)]
        command = [PYTHON, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                   "-p", "no:randomly", *deselect, *tests]
        proc = subprocess.Popen(command, cwd=self.tree, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            return "timeout", time.monotonic() - started, output[-2000:]
        # pytest: 0 all passed, 1 a test failed, 2 interrupted (a collection error, which
        # a mutant can cause), 3 internal error, 4 usage error, 5 nothing collected.
        verdict = {0: "survived", 1: "killed", 2: "killed"}.get(proc.returncode, "error")
        return verdict, time.monotonic() - started, output[-2000:]

    def run(self, mutant: Mutant | Named) -> Outcome:
        target = self.tree / mutant.path
        original = target.read_text()
        build = isinstance(mutant, Named) and mutant.build
        try:
            try:
                mutated = mutant.apply(original)
            except StaleMutantError as exc:
                return Outcome(mutant, "stale", 0.0, str(exc))
            if not build:
                try:
                    compile(mutated, mutant.path, "exec")
                except SyntaxError as exc:
                    return Outcome(mutant, "error", 0.0, f"mutant does not compile: {exc}")
            target.write_text(mutated)
            if build and not self.build_extension():
                return Outcome(mutant, "killed", 0.0, "the compiled mutant does not build")
            verdict, seconds, output = self.pytest(mutant.tests)
        finally:
            target.write_text(original)
            if build:
                self.build_extension()
        return Outcome(mutant, verdict, seconds, _failure_line(output))


def _failure_line(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line[:200]
    return output.strip().splitlines()[-1][:200] if output.strip() else ""


def git_state() -> str:
    def run(*args: str) -> str:
        # --no-optional-locks: not even git's index refresh writes to the tree.
        return subprocess.run(["git", "--no-optional-locks", *args], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip()
    dirty = run("status", "--porcelain", "--", "mcpfast")
    return f"{run('rev-parse', '--short', 'HEAD')}{' + uncommitted changes' if dirty else ''}"


@contextlib.contextmanager
def workers(count: int, timeout: float) -> Iterator[list[Worker]]:
    base = Path(tempfile.mkdtemp(prefix="mcpfast-mutate-"))
    try:
        yield [Worker(base, n, timeout) for n in range(count)]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--topics", default=",".join(TOPICS),
                        help=f"comma-separated, of {', '.join(TOPICS)} (default: all)")
    parser.add_argument("--modules", nargs="*", default=[],
                        help="mutate these files (globs, relative to the repository) instead "
                             "of the topics, e.g. 'mcpfast/protocol/*.py'")
    parser.add_argument("--functions", nargs="*", default=[],
                        help="only these functions (qualified names, globs)")
    parser.add_argument("--tests", nargs="*", default=[],
                        help="run these tests for every mutant instead of the mapped ones")
    parser.add_argument("--only", nargs="*", default=[], help="only these mutant ids")
    parser.add_argument("--limit", type=int, default=0, help="at most this many mutants")
    parser.add_argument("--jobs", type=int, default=1,
                        help="mutants tried at once (each in its own copy); default 1, the "
                             "machines are shared")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds one mutant's test run may take (then: timeout, counted "
                             "as detected)")
    parser.add_argument("--named", nargs="*", default=None,
                        help="try the hand-written breaks of issue 14's table and the "
                             "README's claims (all, or these names) instead")
    parser.add_argument("--list", action="store_true", help="print the mutants, run nothing")
    parser.add_argument("--report", type=Path, default=None,
                        help="write every outcome to this JSON file")
    args = parser.parse_args(argv)

    topics = [t for t in args.topics.split(",") if t]
    unknown = [t for t in topics if t not in TOPICS]
    if unknown:
        parser.error(f"unknown topics {unknown}; known: {', '.join(TOPICS)}")
    mutants: list[Mutant] | list[Named]
    if args.named is not None:
        mutants = [n for n in NAMED if not args.named or n.name in args.named]
    else:
        mutants = find_mutants(topics, args.modules, args.functions, args.tests)
    if args.only:
        wanted = set(args.only)
        mutants = [m for m in mutants if m.id in wanted]
    if args.limit:
        mutants = mutants[:args.limit]
    if args.list:
        for m in mutants:
            print(f"{m.id}  [{m.function}]  {m.original!r:.60} -> {m.replacement!r:.60}")
        print(f"{len(mutants)} mutants")
        return 0
    if not mutants:
        print("no mutants selected")
        return 0

    started = time.time()
    state = git_state()
    print(f"mutation run of {len(mutants)} mutants at {state}, "
          f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {args.jobs} job(s)", flush=True)
    if KNOWN_FAILING:
        print(f"left out (they fail today, exposing open bugs): {', '.join(KNOWN_FAILING)}")
    outcomes: list[Outcome] = []
    with workers(args.jobs, args.timeout) as pool:
        if any(isinstance(m, Named) and m.build for m in mutants):
            for worker in pool:  # the copy gets the extension built from its sources
                if not worker.build_extension():
                    print("the extension does not build in the copy")
                    return 2
        baseline_tests = list(dict.fromkeys(t for m in mutants for t in m.tests))
        verdict, seconds, output = pool[0].pytest(baseline_tests)
        if verdict != "survived":
            print(f"the mapped tests fail without any mutant ({seconds:.0f} s); fix them "
                  f"first:\n{output}")
            return 2
        print(f"baseline: the mapped tests pass ({seconds:.0f} s)", flush=True)
        work: queue.Queue[Mutant | Named] = queue.Queue()
        for m in mutants:
            work.put(m)
        lock = threading.Lock()

        def drain(worker: Worker) -> None:
            while True:
                try:
                    mutant = work.get_nowait()
                except queue.Empty:
                    return
                outcome = worker.run(mutant)
                with lock:
                    outcomes.append(outcome)
                    print(f"[{len(outcomes)}/{len(mutants)}] {outcome.verdict:8} "
                          f"{outcome.seconds:6.1f} s  {mutant.id}  "
                          f"{mutant.original!r:.50} -> {mutant.replacement!r:.50}", flush=True)

        threads = [threading.Thread(target=drain, args=(w,)) for w in pool]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    counts = {v: sum(1 for o in outcomes if o.verdict == v)
              for v in ("killed", "timeout", "survived", "error", "stale")}
    detected = counts["killed"] + counts["timeout"]
    scored = len(outcomes) - counts["error"] - counts["stale"]
    print(f"\n{len(outcomes)} mutants in {time.time() - started:.0f} s at {state}: "
          f"{counts['killed']} killed, {counts['timeout']} timed out, "
          f"{counts['survived']} survived, {counts['error']} not compilable, "
          f"{counts['stale']} stale; score {100 * detected / max(scored, 1):.1f}%")
    for o in outcomes:
        if o.verdict == "stale":
            print(f"  stale: {o.mutant.id}: {o.detail}")
    survivors = sorted((o for o in outcomes if o.verdict == "survived"),
                       key=lambda o: o.mutant.id)
    if survivors:
        print("\nsurvivors:")
        for o in survivors:
            m = o.mutant
            print(f"  {m.id}  [{m.function}]  {m.original!r:.70} -> {m.replacement!r:.70}")
    if args.report is not None:
        args.report.write_text(json.dumps({
            "state": state, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z",
                                                     time.localtime(started)),
            "counts": counts,
            "outcomes": [{"id": o.mutant.id, "function": o.mutant.function,
                          "original": o.mutant.original, "replacement": o.mutant.replacement,
                          "verdict": o.verdict, "seconds": round(o.seconds, 1),
                          "detail": o.detail, "tests": o.mutant.tests}
                         for o in sorted(outcomes, key=lambda o: o.mutant.id)]}, indent=1))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
