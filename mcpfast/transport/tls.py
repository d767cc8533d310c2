"""TLS on the main listener: the server context, its renewal, and client certificates.

The context is built from ``[listen.tls]``; its files are checked every
``reload_interval`` seconds and, when renewed, loaded into a new context, which every
handshake from then on uses (the listener's context hands each connection over to it in
its server-name callback, which runs for every ClientHello). New connections get the
new certificate while those open keep theirs (no restart, no dropped connection). A
renewal that does not load (a certificate without its key yet, say) is logged and the
context in use stays whole; a client CA removed from the file is no longer trusted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from typing import Any

from ..auth.identity import Identity
from ..config import ConfigError, TlsConfig

log = logging.getLogger("mcpfast.transport")

_VERIFY = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
           "required": ssl.CERT_REQUIRED}


class ServerTls:
    """The listener's SSL context and the watch that keeps it current."""

    def __init__(self, config: TlsConfig) -> None:
        self.config = config
        self.loaded = self._stamps()
        self.context = self._build()
        """The listener's own context: it hands each handshake to ``current``."""
        self.context.sni_callback = self._select
        self.current = self.context
        """The context handshakes use: the latest that loaded."""

    def _build(self) -> ssl.SSLContext:
        config = self.config
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = (ssl.TLSVersion.TLSv1_3 if config.min_version == "TLSv1.3"
                                   else ssl.TLSVersion.TLSv1_2)
        context.set_alpn_protocols(["http/1.1"])
        context.verify_mode = _VERIFY[config.verify_clients]
        context.load_cert_chain(config.cert_file, config.key_file)
        if config.client_ca_file is not None:
            context.load_verify_locations(config.client_ca_file)
        return context

    def _select(self, connection: ssl.SSLObject, server_name: str | None,
                context: ssl.SSLContext) -> None:
        if self.current is not context:
            connection.context = self.current

    def _files(self) -> list[str]:
        config = self.config
        return [path for path in (config.cert_file, config.key_file, config.client_ca_file)
                if path is not None]

    def _stamps(self) -> tuple[float, ...]:
        return tuple(os.stat(path).st_mtime_ns for path in self._files())

    async def watch(self) -> None:
        """Load renewed files, every ``reload_interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(self.config.reload_interval)
            try:
                stamps = self._stamps()
                if stamps == self.loaded:
                    continue
                self.current = self._build()
                self.loaded = stamps
            except (OSError, ssl.SSLError) as exc:
                log.error("TLS: the renewed certificate files do not load (%s); the ones "
                          "in use stay", exc)
                continue
            log.info("TLS: loaded the renewed certificate from %s", self.config.cert_file)


def certified_identity(transport: Any, address: str | None) -> Identity | None:
    """The identity a verified client certificate names (its subject's common name), or
    None without one."""
    cert = transport.get_extra_info("peercert")
    if not cert:
        return None
    subject = {key: value for rdn in cert.get("subject", ()) for key, value in rdn}
    name = subject.get("commonName")
    if not name:
        return None
    return Identity(f"mtls:{name}", address, method="mtls", name=name)


def load_server_tls(config: TlsConfig) -> ServerTls:
    """The listener's TLS, or a config error naming ``listen.tls`` when its files do not
    load (``serve`` and ``check-config`` alike)."""
    try:
        return ServerTls(config)
    except (OSError, ValueError) as exc:  # (ssl.SSLError is an OSError)
        raise ConfigError(f"listen.tls.cert_file: the certificate, key or client CAs do "
                          f"not load: {exc}") from None
