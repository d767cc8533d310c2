"""The HTTP request reader, compiled and pure-Python.

Every test taking the ``hr`` fixture runs once per implementation ("c" fails when the
extension was not built). The last test feeds both the same random requests, cut at
random places, and asserts they produce the same requests, phases and errors.
"""

from __future__ import annotations

import importlib
import random
import tracemalloc
from types import ModuleType
from typing import Any

import pytest

from mcpfast_ext.http_types import BODY, HEAD, IDLE, HttpError, HttpRequest

from ..conftest import compiled, twin


@pytest.fixture(params=["py", "c"])
def hr(request: pytest.FixtureRequest) -> ModuleType:
    return twin(request, "http_reader")


POST = (b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
        b"Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
        b"Mcp-Session-Id: abc\r\nContent-Length: 17\r\n\r\n"
        b'{"jsonrpc":"2.0"}')


def test_a_request_is_read_whole(hr: ModuleType) -> None:
    (request,) = hr.HttpRequestReader().feed(POST)
    assert isinstance(request, HttpRequest)
    assert (request.method, request.target, request.path, request.version) == (
        "POST", "/mcp", "/mcp", "1.1")
    assert request.headers == [
        ("Host", "127.0.0.1:8080"), ("Accept", "application/json, text/event-stream"),
        ("Content-Type", "application/json"), ("Mcp-Session-Id", "abc"),
        ("Content-Length", "17")]
    assert request.header("mcp-session-id") == request.header("MCP-SESSION-ID") == "abc"
    assert request.header("Origin") is None
    assert request.header_count("Host") == 1 and request.header_count("Origin") == 0
    assert request.body == b'{"jsonrpc":"2.0"}'
    assert request.keep_alive and not request.upgrade


def test_repeated_headers_are_joined_and_counted(hr: ModuleType) -> None:
    (request,) = hr.HttpRequestReader().feed(
        b"GET /a HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nX-a: 3\r\n\r\n")
    assert request.header("x-a") == "1, 2, 3"
    assert request.header_count("X-A") == 3 and request.header_count("Host") == 1
    # A request built by hand indexes its headers on first use, the same way.
    built = HttpRequest("GET", "/a", "/a", "1.1", request.headers)
    assert built.header("X-A") == "1, 2, 3" and built.header_count("x-a") == 3


@pytest.mark.parametrize("target,path", [
    ("/mcp", "/mcp"), ("/mcp?x=1", "/mcp"), ("/a/b#frag", "/a/b"), ("//double", "//double"),
    ("http://example.com/p?q", "/p"), ("*", "*"),
])
def test_the_path_is_the_target_without_its_query(hr: ModuleType, target: str,
                                                  path: str) -> None:
    method = "OPTIONS" if target == "*" else "GET"
    (request,) = hr.HttpRequestReader().feed(
        f"{method} {target} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
    assert (request.target, request.path) == (target, path)


def test_pipelined_requests_and_phases_byte_by_byte(hr: ModuleType) -> None:
    reader = hr.HttpRequestReader()
    data = POST + b"GET /b HTTP/1.0\r\nHost: h\r\n\r\n"
    seen: list[Any] = []
    phases = []
    for i in range(len(data)):
        seen += reader.feed(data[i:i + 1])
        phases.append(reader.phase)
        if reader.phase == BODY:
            assert reader.buffered > len(b"POST /mcp")
    assert [r.path for r in seen] == ["/mcp", "/b"]
    assert seen[0].body == b'{"jsonrpc":"2.0"}' and not seen[1].keep_alive
    assert phases[0] == HEAD and BODY in phases and phases[-1] == IDLE
    assert phases[len(POST) - 1] == IDLE and reader.buffered == 0


def test_a_chunked_body_is_joined(hr: ModuleType) -> None:
    (request,) = hr.HttpRequestReader().feed(
        b"POST /mcp HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert request.body == b"abcde"


def test_an_upgrade_hands_over_the_bytes_after_its_head(hr: ModuleType) -> None:
    reader = hr.HttpRequestReader()
    (request,) = reader.feed(b"GET /mcp HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\n\r\n\x81\x80")
    assert request.upgrade and reader.upgraded_data == b"\x81\x80"
    with pytest.raises(RuntimeError):
        reader.feed(b"more")


H2C_POST = (b"POST /mcp HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
            b"Content-Length: 17\r\n\r\n" b'{"jsonrpc":"2.0"}')


@pytest.mark.parametrize("pieces", [1, 7, 10_000])
def test_an_upgrade_to_another_protocol_is_read_as_http(hr: ModuleType, pieces: int) -> None:
    """``curl --http2`` asks each request to switch to h2c: declined, the request is
    read with its body, and so are the requests after it."""
    reader = hr.HttpRequestReader()
    data = H2C_POST + b"GET /mcp HTTP/1.1\r\nHost: h\r\n\r\n" + H2C_POST
    got = [r for i in range(0, len(data), pieces) for r in reader.feed(data[i:i + pieces])]
    assert [(r.method, r.body, r.keep_alive, r.upgrade) for r in got] == [
        ("POST", b'{"jsonrpc":"2.0"}', True, False), ("GET", b"", True, False),
        ("POST", b'{"jsonrpc":"2.0"}', True, False)]
    assert got[0].header("HTTP2-Settings") == "AAMAAABkAAQCAAAAAAIAAAAA"
    assert got[0].header("Upgrade") is None and reader.upgraded_data is None
    assert reader.phase == IDLE and reader.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")


@pytest.mark.parametrize("data,status", [
    (b"BREW / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n", 414),  # the target: URI Too Long
    (b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789", 413),
    # Refused as the head ends, the body not waited for.
    (b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
     501),
    # The authority-form target of CONNECT: not a path nor a URL.
    (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 400),
    (b"CONNECT example.com:443 HTTP/1.0\r\n\r\n", 400),  # ending the connection too
    (b"CONNECT example.com:443 HTTP/1.1\r\nHost: e\r\nConnection: close\r\n\r\n", 400),
    # HTTP/1.0 has no transfer codings: faulty framing (RFC 9112 6.1), however it is
    # meant to be kept alive.
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
     b"2\r\n{}\r\n0\r\n\r\n", 400),
])
def test_bad_requests_raise_their_status(hr: ModuleType, data: bytes, status: int) -> None:
    with pytest.raises(HttpError) as error:
        hr.HttpRequestReader(max_body_bytes=5).feed(data)
    assert error.value.status == status
    assert "callback" not in error.value.detail  # the reason, not the parser's plumbing


@pytest.mark.parametrize("head,expected", [
    (b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", True),
    (b"POST / HTTP/1.1\r\nExpect: 100-Continue \r\nContent-Length: 5\r\n\r\n", True),
    (b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n",
     True),
    # No body to wait for; HTTP/1.0 (no interim responses); no such expectation.
    (b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n", False),
    (b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", False),
    (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", False),
])
def test_a_head_expecting_100_continue_says_so(hr: ModuleType, head: bytes,
                                              expected: bool) -> None:
    """RFC 9110 10.1.1: the client sends the body once the server has answered 100
    (Continue); the reader tells the connection when to, as the head ends."""
    reader = hr.HttpRequestReader()
    requests = reader.feed(head)
    if head.endswith(b"Content-Length: 0\r\n\r\n"):
        assert len(requests) == 1 and reader.phase == IDLE
    else:
        assert requests == [] and reader.phase == BODY
    assert reader.continue_expected is expected
    if reader.phase == BODY:
        body = b"5\r\nhello\r\n0\r\n\r\n" if b"chunked" in head else b"hello"
        (request,) = reader.feed(body)
        assert request.body == b"hello"


def test_the_head_limit_counts_the_whole_head(hr: ModuleType) -> None:
    head = b"GET /" + b"u" * 50 + b" HTTP/1.1\r\n" + b"".join(
        b"X-%d: %s\r\n" % (i, b"v" * 40) for i in range(5)) + b"\r\n"
    assert hr.HttpRequestReader(max_head_bytes=300).feed(head)
    with pytest.raises(HttpError) as error:
        hr.HttpRequestReader(max_head_bytes=200).feed(head)
    assert error.value.status == 431


def _random_request(rng: random.Random) -> bytes:
    method = rng.choice(["GET", "POST", "DELETE", "PUT"])
    target = rng.choice(["/mcp", "/mcp?x=1", "/a/b", "//x", "/é".encode().decode("latin-1")])
    lines = [f"{method} {target} HTTP/1.{rng.choice('01')}", "Host: 127.0.0.1"]
    for _ in range(rng.randrange(6)):
        name = rng.choice(["Accept", "X-Y", "x-y", "Mcp-Session-Id", "Origin", "Connection",
                           "Upgrade"])
        value = rng.choice(["a", "b, c", "keep-alive", "close", " spaced ", "ünï", "upgrade",
                            "h2c", "websocket", "h2c, WebSocket"])
        lines.append(f"{name}: {value}")
    body = bytes(rng.randrange(32, 127) for _ in range(rng.randrange(40)))
    if rng.random() < 0.2:
        lines.append("Transfer-Encoding: chunked")
        encoded = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
        encoded = body
    if rng.random() < 0.05:
        lines.append("Bad Header")  # malformed: both must refuse it alike
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + encoded


def _run(module: ModuleType, data: bytes, cuts: list[int]) -> list[Any]:
    reader = module.HttpRequestReader(max_head_bytes=400, max_body_bytes=30)
    trace: list[Any] = []
    start = 0
    for end in [*cuts, len(data)]:
        try:
            requests = reader.feed(data[start:end])
        except HttpError as exc:
            trace.append(("error", exc.status))
            break
        except RuntimeError:
            trace.append("upgraded")
            break
        trace += [(r.method, r.target, r.path, r.version, r.headers, r.body, r.keep_alive,
                   r.upgrade, {n: r.header(n) for n, _ in r.headers},
                   {n: r.header_count(n) for n, _ in r.headers}) for r in requests]
        trace.append((reader.phase, reader.buffered))
        start = end
    return trace


def test_the_twins_read_random_requests_alike() -> None:
    pure = importlib.import_module("mcpfast_ext.http_reader_py")
    built = compiled("http_reader")
    rng = random.Random(20261201)
    for _ in range(1500):
        data = b"".join(_random_request(rng) for _ in range(rng.randrange(1, 4)))
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(4))))
        assert _run(pure, data, cuts) == _run(built, data, cuts), (data, cuts)


PLAIN = (b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: application/json, "
         b"text/event-stream\r\nContent-Type: application/json\r\nMcp-Session-Id: 4f2a\r\n"
         b"Content-Length: 17\r\n\r\n" b'{"jsonrpc":"2.0"}')
MUTANTS = b' \t\r\n:/?#%"<>\\^`{|}\x00\x01\x7f\x80\xff,;=()[]0123456789aAzZ-_.~!'


def test_the_twins_read_mutated_requests_alike() -> None:
    """The compiled reader reads a plain request itself and leaves the rest to llhttp;
    the pure one leaves all of it to llhttp. On requests damaged a byte or a few at a
    time, pipelined and cut at random places, both must still agree on every request,
    error and phase: the compiled path accepts nothing llhttp would not, and reads
    nothing differently."""
    pure = importlib.import_module("mcpfast_ext.http_reader_py")
    built = compiled("http_reader")
    rng = random.Random(20261202)
    requests = [PLAIN, PLAIN.replace(b"POST", b"GET").replace(b"Content-Length: 17", b"X-A: b")
                .replace(b'{"jsonrpc":"2.0"}', b""), PLAIN.replace(b"/mcp", b"/a/b%20;c=d@e")]
    for _ in range(6000):
        data = bytearray(b"".join(rng.choice(requests) for _ in range(rng.randrange(1, 3))))
        for _ in range(rng.randrange(1, 4)):
            at = rng.randrange(len(data))
            what = rng.random()
            if what < 0.5:
                data[at] = rng.choice(MUTANTS)
            elif what < 0.75:
                data.insert(at, rng.choice(MUTANTS))
            else:
                del data[at]
        whole = bytes(data)
        cuts = sorted(rng.sample(range(1, len(whole)), rng.randrange(3))) \
            if rng.random() < 0.3 else []
        assert _run(pure, whole, cuts) == _run(built, whole, cuts), (whole, cuts)


def _trace(module: ModuleType, data: bytes, cuts: list[int], head: int,
           body: int) -> list[Any]:
    """What a reader with these limits makes of ``data`` cut at ``cuts``, its index
    and repeated names included."""
    reader = module.HttpRequestReader(max_head_bytes=head, max_body_bytes=body)
    trace: list[Any] = []
    start = 0
    for end in [*cuts, len(data)]:
        try:
            got = reader.feed(data[start:end])
        except HttpError as exc:
            return [*trace, ("error", exc.status)]
        trace += [(r.method, r.target, r.path, r.version, r.headers, r.body, r.keep_alive,
                   r.upgrade, r.fields, r.repeated) for r in got]
        if reader.failed is not None:  # after the requests of this read
            return [*trace, ("failed", reader.failed.status)]
        trace.append((reader.phase, reader.buffered))
        start = end
    return trace


def test_the_twins_read_plain_requests_alike() -> None:
    """The plain requests themselves, whole and cut, with limits on either side of
    their size."""
    pure = importlib.import_module("mcpfast_ext.http_reader_py")
    built = compiled("http_reader")
    for data in (PLAIN, PLAIN * 3, PLAIN.replace(b"4f2a", b"4f2a\r\nMcp-Session-Id: 9")):
        for cut in range(0, len(data), 7):
            cuts = [cut] if cut else []
            for head, body in ((400, 30), (120, 30), (400, 16), (60, 17)):
                assert _trace(pure, data, cuts, head, body) == \
                    _trace(built, data, cuts, head, body), (data, cuts, head, body)


@pytest.mark.parametrize("first", [
    b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.1\r\nProxy-Connection: close\r\n\r\n",
])
def test_nothing_is_read_after_a_request_that_ends_the_connection(first: bytes) -> None:
    """What follows a request that ends the connection is not read (RFC 9112 9.6: the
    server closes after answering it), in the same read or a later one, by llhttp
    (which reads Proxy-Connection as Connection) nor by the compiled path for plain
    requests (found by review: it read it, in a later read); nor is it an error."""
    pure = importlib.import_module("mcpfast_ext.http_reader_py")
    built = compiled("http_reader")
    for after in (b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", b"NOT A REQUEST\r\n\r\n"):
        for cuts in ([], [len(first)]):
            traces = [_trace(module, first + after, cuts, 400, 30)
                      for module in (pure, built)]
            assert traces[0] == traces[1], (first, cuts, traces)
            assert [step[1] for step in traces[0] if len(step) == 10] == ["/"], traces[0]
            assert not any(step[0] in ("error", "failed") for step in traces[0]), traces[0]


def test_a_malformed_request_after_whole_ones_fails_after_them(hr: ModuleType) -> None:
    """Whole requests, then bytes that are none, in one read: the requests are returned
    and the error is kept for after them (``failed``), as the connection answers them in
    order; in a read of its own, the error is raised."""
    plain = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
    for garbage in (b"BAD REQUEST LINE\r\n\r\n", b"GET / HTTP/9\r\n\r\n"):
        one = hr.HttpRequestReader()
        got = one.feed(plain * 2 + garbage)
        assert [r.target for r in got] == ["/x", "/x"]
        assert one.failed is not None and one.failed.status == 400
        alone = hr.HttpRequestReader()
        assert [r.target for r in alone.feed(plain)] == ["/x"] and alone.failed is None
        with pytest.raises(HttpError):
            alone.feed(garbage)


_LINES = [("Host", "127.0.0.1:8080"), ("Accept", "application/json, text/event-stream"),
          ("Content-Type", "application/json"), ("Mcp-Session-Id", "4f2a9c"),
          ("MCP-Protocol-Version", "2025-11-25"), ("Authorization", "Bearer tok.en.xyz")]


def _changed(rng: random.Random, lines: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``lines`` with one change a keep-alive client's next request might make, most
    of them keeping each line's length: a byte of a value, the case of a name, a
    latin-1 byte, an order, a line more or less, a repeated name, a framing header."""
    lines = list(lines)
    at = rng.randrange(len(lines)) if lines else 0
    what = rng.randrange(10)
    if what == 0 and lines:
        name, value = lines[at]
        i = rng.randrange(len(value))
        lines[at] = (name, value[:i] + rng.choice("0aZ,é\xff") + value[i + 1:])
    elif what == 1 and lines:
        name, value = lines[at]
        i = rng.randrange(len(name))
        lines[at] = (name[:i] + name[i].swapcase() + name[i + 1:], value)
    elif what == 2 and len(lines) > 1:
        other = rng.randrange(len(lines))
        lines[at], lines[other] = lines[other], lines[at]
    elif what == 3 and lines:
        del lines[at]
    elif what == 4:
        lines.insert(at, rng.choice(_LINES))
    elif what == 5 and lines:
        lines.insert(at, (lines[at][0].lower(), "again"))
    elif what == 6:
        lines.insert(at, rng.choice([("Connection", "keep-alive"), ("Upgrade", "x"),
                                     ("Transfer-Encoding", "chunked"),
                                     ("Connection", "close"), ("Content-Length", "3")]))
    elif what == 7:
        return list(_LINES)
    return lines


def test_a_long_lived_reader_reads_every_changed_line_afresh() -> None:
    """The compiled reader takes a header line equal to the previous request's line at
    its place from that request instead of decoding it again. One reader of each twin,
    kept across thousands of requests that each change the last one a little (most of
    the changes keep a line's length, so only its bytes tell it apart), must read every
    request alike; a reader that fails or ends the connection is replaced by a new
    one, on both sides."""
    pure = importlib.import_module("mcpfast_ext.http_reader_py")
    built = compiled("http_reader")
    rng = random.Random(20261203)
    readers = [module.HttpRequestReader() for module in (pure, built)]
    lines = list(_LINES)
    for _ in range(4000):
        lines = _changed(rng, lines)
        body = b"x" * rng.choice([0, 9, 10, 100])
        head = [f"{rng.choice(['POST', 'GET'])} {rng.choice(['/mcp', '/mcq', '/mcp'])} HTTP/1.1",
                *(f"{name}: {value}" for name, value in lines),
                f"Content-Length: {len(body)}"]
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        if rng.random() < 0.1:
            data *= 2
        traces = []
        for reader in readers:
            try:
                got = reader.feed(data)
            except (HttpError, RuntimeError) as exc:
                traces.append(("error", getattr(exc, "status", None)))
                continue
            traces.append([(r.method, r.target, r.path, r.headers, r.body, r.keep_alive,
                            r.upgrade, r.fields, r.repeated) for r in got] + [reader.phase])
        assert traces[0] == traces[1], (data, traces)
        if traces[0][0] == "error" or any(not r[5] or r[6] for r in traces[0][:-1]):
            readers = [module.HttpRequestReader() for module in (pure, built)]


def test_the_compiled_reader_takes_a_repeated_line_from_the_request_before() -> None:
    """What the test above keeps honest: a keep-alive client's unchanged lines are the
    very objects of its previous request, a changed one is not."""
    reader = compiled("http_reader").HttpRequestReader()
    (first,) = reader.feed(PLAIN)
    (second,) = reader.feed(PLAIN.replace(b"4f2a", b"4f2b"))
    assert [a is b for a, b in zip(first.headers, second.headers, strict=True)] == \
        [True, True, True, False, True]
    assert second.header("mcp-session-id") == "4f2b"
    # Names are held once for every connection: another reader's are the same objects.
    (other,) = compiled("http_reader").HttpRequestReader().feed(PLAIN)
    assert all(a[0] is b[0] for a, b in zip(first.headers, other.headers, strict=True))


def test_names_past_the_shared_table_read_alike() -> None:
    """Header names are shared through a process-wide table of at most 512 names of at
    most 64 bytes; names past either bound, cased every way, are read as the pure
    reader reads them."""
    pure = importlib.import_module("mcpfast_ext.http_reader_py")
    built = compiled("http_reader")
    readers = [module.HttpRequestReader(max_head_bytes=65536) for module in (pure, built)]
    for n in range(700):
        name = f"X-Name-{n}" if n % 3 else f"X-{'Long' * 20}-{n}"
        for cased in (name, name.upper(), name.lower()):
            data = (f"GET /mcp HTTP/1.1\r\nHost: a\r\n{cased}: {n}\r\n"
                    f"{name.lower()}: again\r\n\r\n").encode()
            traces = [[(r.headers, r.fields, r.repeated) for r in reader.feed(data)]
                      for reader in readers]
            assert traces[0] == traces[1], data
            assert traces[0][0][1][name.lower()] == f"{n}, again"


def test_a_keep_alive_reader_holds_little_between_requests() -> None:
    """What a keep-alive connection's reader keeps of its last request, to take its
    lines again: its values and their pairs, not the names (shared), nor the body.
    Measured over a thousand readers, each fed its own copy of a request."""
    built = compiled("http_reader")
    request = PLAIN.replace(b"4f2a", b"4f2a" * 13)  # a session id of 52 bytes
    readers = [built.HttpRequestReader() for _ in range(1000)]
    readers[0].feed(request)  # the names, held once, before measuring
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for reader in readers[1:]:
            reader.feed(bytes(bytearray(request)))
        held = (tracemalloc.get_traced_memory()[0] - before) / (len(readers) - 1)
    finally:
        tracemalloc.stop()
    assert held < 1024, held
