"""Config decoding: defaults, validation errors naming the key path, ${ENV}."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcpfast.config import ConfigError, load, parse

UP = '[upstreams.a]\ncommand = ["srv"]\n'


def test_bundled_default_fronts_the_demo() -> None:
    config = load()
    assert list(config.upstreams) == ["demo"]
    assert config.upstreams["demo"].command[1:] == ["-m", "mcpfast.demo"]
    assert (config.listen.host, config.listen.port) == ("127.0.0.1", 8080)
    assert (config.admin.host, config.admin.port) == ("127.0.0.1", 9090)


@pytest.mark.parametrize("text,message", [
    ('[listen]\nport = "x"\n' + UP, "listen.port: expected int, got str"),
    ("[listen]\nprot = 1\n" + UP, "listen.prot: unknown key"),
    ("[listen]\nport = 70000\n" + UP, "listen.port: must be between 0 and 65535"),
    ('[listen]\nunix_socket_mode = "999"\n' + UP, "listen.unix_socket_mode: must be an octal"),
    ('[logging]\nlevel = "loud"\n' + UP, "logging.level: Invalid enum value 'loud'"),
    ("[upstreams.a]\n", "upstreams.a.command: is required"),
    ('[listen]\nauth = ["api_key", "jwt"]\n[auth]\nresource = "https://g/mcp"\n'
     '[[auth.api_keys]]\nname = "a"\nhash = "sha256:' + "0" * 64 + '"\n'
     '[auth.jwt]\nissuer = "https://i"\njwks_url = "https://i/jwks"\n'
     '[[authorization.rules]]\nnames = ["*", "jwt:bob", "alice"]\n' + UP,
     "authorization.rules[0].names[2]: 'alice' is ambiguous with listen.auth = "
     "['api_key', 'jwt']: write which one is meant, as api_key:alice or jwt:alice"),
    ('[[auth.api_keys]]\nname = "ro"\nhash = "sha256:' + "0" * 64 + '"\n'
     '[[auth.api_keys]]\nname = "admin"\nhash = "sha256:' + "0" * 64 + '"\n' + UP,
     "auth.api_keys: keys 0 and 1 have the same hash: one key cannot be two clients"),
    ('[listen]\npath = "/mcp?x=1"\n' + UP,
     "listen.path: '/mcp?x=1' cannot be requested: a path has no '?', '#', space"),
    ('[listen]\npath = "/m cp"\n' + UP, "listen.path: '/m cp' cannot be requested"),
    ('[admin]\ntoken = ""\n' + UP,
     "admin.token: must be at least 16 characters (it is empty: is the variable it names "
     "set to nothing?)"),
    ('[[authorization.rules]]\nnames = ["jwt:"]\n' + UP,
     "authorization.rules[0].names[0]: 'jwt:' names no one; write METHOD:NAME"),
    ("[upstreams.a]\ncommand = []\n", "upstreams.a.command: must be a non-empty list"),
    ('[upstreams.a]\ncommand = ["x", 3]\n', "upstreams.a.command[1]: expected str, got int"),
    ('[upstreams.a]\ncommand = ["x"]\nrequest_timeout = -1\n',
     "upstreams.a.request_timeout: must be positive"),
    ('[upstreams."a b"]\ncommand = ["x"]\n', "upstreams.a b: an upstream name must be"),
    ('[upstreams.a__b]\ncommand = ["x"]\n', "the name contains the routing separator"),
    ("[routing]\npage_size = -1\n" + UP, "routing.page_size: must be 0 (one page) or more"),
    ("", "upstreams: at least one upstream is required"),
    ("[tracing]\nsample_ratio = 1.5\n" + UP, "tracing.sample_ratio: must be from 0 to 1"),
    ('[tracing]\nendpoint = "127.0.0.1:4318"\n' + UP,
     "tracing.endpoint: must be an http:// or https:// URL"),
    ('[tracing]\nheaders = { "bad name" = "x" }\n' + UP,
     "tracing.headers: 'bad name' is not a valid HTTP header name"),
    ("[tracing]\nheaders = { a = 1 }\n" + UP, "tracing.headers: expected str, got int"),
    ("[tracing]\nmax_batch = 100\nmax_queue = 10\n" + UP,
     "tracing.max_queue: must be at least max_batch"),
    ("[tracing]\nschedule_delay = 0\n" + UP, "tracing.schedule_delay: must be positive"),
    ("[tracing]\nenable = true\n" + UP, "tracing.enable: unknown key"),
    ("[limits]\nmax_batch = 0\n" + UP, "limits.max_batch: must be positive"),
    ("listen = [", "not valid TOML"),
    ("workers = 0\n" + UP, "workers: must be between 1 and 256"),
    ("workers = 257\n" + UP, "workers: must be between 1 and 256"),
    ('workers = "2"\n' + UP, "workers: expected int, got str"),
    ("[listen]\nmax_message_bytes = 9223372036854775808\n" + UP,
     "listen.max_message_bytes: must be between 1024 and 1073741824"),
    ("[listen]\nmax_message_bytes = 1023\n" + UP, "listen.max_message_bytes: must be between"),
    ('[upstreams.a]\ncommand = ["x"]\nmax_message_bytes = 2147483648\n',
     "upstreams.a.max_message_bytes: must be between 1024 and 1073741824"),
    ('[listen]\nhost = "not a host!!"\n' + UP,
     "listen.host: 'not a host!!' is neither an IP address nor a host name"),
    ('[admin]\nhost = "a_b"\n' + UP, "admin.host: 'a_b' is neither"),
    ("workers = 2\n[listen]\nport = 0\n" + UP,
     "listen.port: must be a port number, not 0 (any free port), when workers > 1"),
    ("[listen]\nport = 9090\n" + UP, "admin.port: is listen.port too (9090, on an address"),
    ('[listen]\nport = 7000\nhost = "0.0.0.0"\n[admin]\nport = 7000\n' + UP,
     "admin.port: is listen.port too (7000"),
    ('[upstreams.a]\nurl = "http://[::1/mcp"\n',
     "upstreams.a.url: is not a valid URL (Invalid IPv6 URL)"),
    ('[upstreams.a]\nurl = "https://127.0.0.1:1/mcp"\nca_file = "/nonexistent/ca.pem"\n',
     "upstreams.a.ca_file: '/nonexistent/ca.pem' is not a file"),
])
def test_errors_name_the_key_path(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse(text)
    assert message in str(error.value)


def test_the_admin_port_may_share_a_number_on_another_address() -> None:
    config = parse('[listen]\nport = 7000\nhost = "127.0.0.1"\n'
                   '[admin]\nport = 7000\nhost = "127.0.0.2"\n' + UP)
    assert (config.listen.port, config.admin.port) == (7000, 7000)
    assert parse("[listen]\nport = 0\n[admin]\nport = 0\n" + UP).admin.port == 0


def test_one_worker_by_default() -> None:
    assert parse(UP).workers == 1
    assert parse("workers = 256\n" + UP).workers == 256


def test_tracing_is_off_by_default() -> None:
    tracing = parse(UP).tracing
    assert tracing.enabled is False
    assert (tracing.endpoint, tracing.service_name, tracing.sample_ratio) == \
        ("http://127.0.0.1:4318/v1/traces", "mcpfast", 1.0)


def test_env_interpolation() -> None:
    config = parse('[upstreams.a]\ncommand = ["${BIN}", "--token=${TOKEN}", "$${KEEP}"]\n',
                   environ={"BIN": "/usr/bin/srv", "TOKEN": "s3cret"})
    assert config.upstreams["a"].command == ["/usr/bin/srv", "--token=s3cret", "${KEEP}"]


def test_env_interpolation_errors() -> None:
    with pytest.raises(ConfigError, match=r"upstreams.a.command\[0\]: environment variable X"):
        parse('[upstreams.a]\ncommand = ["${X}"]\n', environ={})
    with pytest.raises(ConfigError, match="malformed variable reference"):
        parse('[upstreams.a]\ncommand = ["${1bad}"]\n', environ={})


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load("/nonexistent/mcpfast.toml")


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'# caf\xe9\n[upstreams.a]\ncommand = ["srv"]\n')
    with pytest.raises(ConfigError, match=r"cannot read: not UTF-8 text \(byte 0xe9 at "
                                          r"offset 5\)"):
        load(path)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "0.0.0.0", "", "localhost",
                                  "gw-1.internal.example.", "fe80::1%eth0"])
def test_listening_hosts_that_are_addresses_or_names(host: str) -> None:
    assert parse(f'[listen]\nhost = "{host}"\n' + UP).listen.host == host


def test_interpolation_is_recorded_for_redaction() -> None:
    config = parse('[upstreams.a]\ncommand = ["srv", "--token=${TOKEN}", "$${KEEP}", "plain"]\n'
                   'env = { KEY = "${KEY}" }\n[listen.http]\nsession_secret = "${SESSION}"\n',
                   environ={"TOKEN": "t0ken", "KEY": "k", "SESSION": "x" * 16})
    record = config.interpolated
    assert record.names == {"TOKEN", "KEY", "SESSION"}
    assert record.written == {"upstreams.a.command[1]": "--token=${TOKEN}",
                              "upstreams.a.env.KEY": "${KEY}",
                              "listen.http.session_secret": "${SESSION}"}
    assert record.shown("upstreams.a.command[1]", "--token=t0ken") == "--token=${TOKEN}"
    assert record.shown("upstreams.a.command[2]", "${KEEP}") == "${KEEP}"
    assert config.upstreams["a"].command[1] == "--token=t0ken"


@pytest.mark.parametrize("key", ["source", "interpolated"])
def test_fields_parse_sets_are_not_config_keys(key: str) -> None:
    with pytest.raises(ConfigError, match=f"{key}: unknown key"):
        parse(f'{key} = "x"\n' + UP)


def test_inherit_env_values() -> None:
    assert parse(UP).upstreams["a"].inherit_env == "allowlist"
    for value, expected in (("true", True), ("false", False), ('"allowlist"', "allowlist")):
        assert parse(UP + f"inherit_env = {value}\n").upstreams["a"].inherit_env == expected
    with pytest.raises(ConfigError, match=r"upstreams\.a\.inherit_env: Invalid enum value 'all'"):
        parse(UP + 'inherit_env = "all"\n')
    with pytest.raises(ConfigError, match=r"upstreams\.a\.env_allow: applies only with"):
        parse(UP + 'inherit_env = true\nenv_allow = ["AWS_*"]\n')
    assert parse(UP + 'env_allow = ["AWS_*"]\n').upstreams["a"].env_allow == ["AWS_*"]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_admin_on_loopback_needs_no_token(host: str) -> None:
    assert parse(f'[admin]\nhost = "{host}"\n' + UP).admin.token is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "gateway.internal", ""])
def test_admin_beyond_loopback_needs_a_token(host: str) -> None:
    with pytest.raises(ConfigError, match=r"admin.token: is required when admin.host"):
        parse(f'[admin]\nhost = "{host}"\n' + UP)
    config = parse(f'[admin]\nhost = "{host}"\ntoken = "${{T}}"\n' + UP,
                   environ={"T": "0123456789abcdef"})
    assert config.admin.token == "0123456789abcdef"
    # Disabled, it binds nothing.
    parse(f'[admin]\nhost = "{host}"\nenabled = false\n' + UP)


def test_admin_token_is_not_trivially_short() -> None:
    with pytest.raises(ConfigError, match=r"admin\.token: must be at least 16 characters"):
        parse('[admin]\ntoken = "short"\n' + UP)


def test_unix_socket_auto_is_per_user(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/4242")
    assert load().listen.unix_socket == "/run/user/4242/mcpfast.sock"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert load().listen.unix_socket == f"/tmp/mcpfast-{os.getuid()}/mcpfast.sock"
    assert parse('[listen]\nunix_socket = "auto"\n' + UP).listen.unix_socket == \
        f"/tmp/mcpfast-{os.getuid()}/mcpfast.sock"
    assert parse(UP).listen.unix_socket is None


def test_examples_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    monkeypatch.setenv("MCPFAST_ADMIN_TOKEN", "0123456789abcdef")
    monkeypatch.setenv("FILES_API_TOKEN", "x")
    examples = Path(__file__).resolve().parent.parent / "examples"
    for path in sorted(examples.glob("*.toml")):
        load(path)
    container = load(examples / "container.toml")
    assert container.admin.host == "0.0.0.0" and container.admin.token == "0123456789abcdef"
