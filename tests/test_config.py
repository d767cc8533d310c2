"""Config decoding: defaults, validation errors naming the key path, ${ENV}."""

from __future__ import annotations

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
    ("[upstreams.a]\ncommand = []\n", "upstreams.a.command: must be a non-empty list"),
    ('[upstreams.a]\ncommand = ["x", 3]\n', "upstreams.a.command[1]: expected str, got int"),
    ('[upstreams.a]\ncommand = ["x"]\nrequest_timeout = -1\n',
     "upstreams.a.request_timeout: must be positive"),
    ('[upstreams."a b"]\ncommand = ["x"]\n', "upstreams.a b: an upstream name must be"),
    ('[upstreams.a__b]\ncommand = ["x"]\n', "the name contains the routing separator"),
    ("", "upstreams: at least one upstream is required"),
    ("listen = [", "not valid TOML"),
])
def test_errors_name_the_key_path(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse(text)
    assert message in str(error.value)


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
