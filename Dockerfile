# syntax=docker/dockerfile:1
# Multi-stage: build the wheel with the compiled extension required, then install it
# into a clean image that runs as an unprivileged user.
#
# The bundled config (examples/container.toml) binds the admin port beyond loopback, so
# it needs a bearer token, taken from the environment; the gateway refuses to start
# without it:
#   docker run -e MCPFAST_ADMIN_TOKEN="$(openssl rand -hex 24)" -p 8080:8080 -p 9090:9090 IMAGE
# /health, /liveness and /readiness answer without it (the HEALTHCHECK below uses
# /liveness); /status, /metrics and /api/v1/* need "Authorization: Bearer <token>".
# Upstreams do not inherit MCPFAST_* variables nor anything the config interpolates.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY mcpfast ./mcpfast
COPY mcpfast_ext ./mcpfast_ext
RUN pip install --no-cache-dir build \
 && MCPFAST_BUILD_EXTENSION=yes python -m build --wheel --outdir /wheels . \
 && pip wheel --no-cache-dir --wheel-dir /wheels /wheels/mcpfast-*.whl

FROM ${BASE_IMAGE}
RUN useradd --system --uid 10001 --create-home --home-dir /home/mcpfast mcpfast
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-index --find-links /tmp/wheels mcpfast \
 && rm -rf /tmp/wheels \
 && python -c "import mcpfast_ext; assert mcpfast_ext.IMPLEMENTATION == 'compiled'"
COPY examples/container.toml /etc/mcpfast/mcpfast.toml
USER mcpfast
WORKDIR /home/mcpfast
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9090/liveness', timeout=2).status != 200)"
STOPSIGNAL SIGTERM
ENTRYPOINT ["mcpfast"]
CMD ["serve", "--config", "/etc/mcpfast/mcpfast.toml"]
