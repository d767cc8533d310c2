"""Which class serves each kind of upstream (``upstreams.NAME.transport``)."""

from __future__ import annotations

from ..config import Interpolated, UpstreamConfig
from .balancer import Balancer
from .base import CallT, Upstream, UpstreamEvents
from .sse import SseUpstream
from .stdio import StdioUpstream
from .streamable import StreamableHttpUpstream
from .unix import UnixUpstream
from .websocket import WebSocketUpstream


def new_upstream(name: str, index: int, config: UpstreamConfig,
                 events: UpstreamEvents[CallT], interpolated: Interpolated
                 ) -> Upstream[CallT]:
    """The upstream ``config`` describes: with ``replicas`` (or circuit breaking, health
    checks or outlier detection), its first endpoint, holding the ``Balancer`` of all."""
    first = _endpoint(name, index, config, events, interpolated)
    if config.replicas or config.max_pending_requests or config.health_check or \
            config.outlier_detection:
        members = [first, *(_endpoint(name, index, replica, events, interpolated)
                            for replica in config.replicas)]
        balancer = Balancer(members, config)
        for member in members:
            member.balancer = balancer
            member.choose = True
    return first


def _endpoint(name: str, index: int, config: UpstreamConfig,
              events: UpstreamEvents[CallT], interpolated: Interpolated
              ) -> Upstream[CallT]:
    if config.transport == "websocket":
        return WebSocketUpstream(name, index, config, events)
    if config.transport == "streamable_http":
        return StreamableHttpUpstream(name, index, config, events)
    if config.transport == "sse":
        return SseUpstream(name, index, config, events)
    if config.transport == "unix":
        return UnixUpstream(name, index, config, events)
    return StdioUpstream(name, index, config, events, interpolated)
