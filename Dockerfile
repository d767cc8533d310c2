# Multi-stage: build the wheel with the compiled extension required, then install it
# into a clean image that runs as an unprivileged user.
#
# The bundled config (examples/container.toml) binds the admin port beyond loopback, so
# it needs a bearer token, taken from the environment; the gateway refuses to start
# without it:
#   docker run -e MCPFAST_ADMIN_TOKEN="$(openssl rand -hex 24)" -p 8080:8080 -p 9090:9090 IMAGE
# /health, /liveness and /readiness answer without it (the HEALTHCHECK below asks
# /liveness on the admin port the config names, with `mcpfast probe`); /status, /metrics
# and /api/v1/* need "Authorization: Bearer <token>".
# Upstreams do not inherit MCPFAST_* variables nor anything the config interpolates.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The build tools, pinned: the wheel is built with exactly these (no isolated,
# unpinned build environment).
RUN pip install --no-cache-dir build==1.6.1 setuptools==84.2.1 wheel==0.48.0 \
    Cython==3.3.1
COPY pyproject.toml setup.py README.md LICENSE ./
COPY mcpfast ./mcpfast
COPY mcpfast_ext ./mcpfast_ext
# With the tracing extra (OpenTelemetry's SDK and OTLP exporter, a few MB), so that
# [tracing] can be enabled in the image's config.
RUN MCPFAST_BUILD_EXTENSION=yes python -m build --no-isolation --wheel --outdir /wheels . \
 && pip wheel --no-cache-dir --wheel-dir /wheels "$(ls /wheels/mcpfast-*.whl)[tracing]"

FROM ${BASE_IMAGE}
RUN useradd --system --uid 10001 --create-home --home-dir /home/mcpfast mcpfast
# The wheels are mounted from the build stage, not copied: a copy would stay behind in
# a layer of its own, however it is removed after.
RUN --mount=type=bind,from=build,source=/wheels,target=/tmp/wheels \
    pip install --no-cache-dir --no-index --find-links /tmp/wheels 'mcpfast[tracing]' \
 && python -c "import mcpfast_ext; assert mcpfast_ext.IMPLEMENTATION == 'compiled'"
COPY examples/container.toml /etc/mcpfast/mcpfast.toml
USER mcpfast
WORKDIR /home/mcpfast
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["mcpfast", "probe", "--config", "/etc/mcpfast/mcpfast.toml"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["mcpfast"]
CMD ["serve", "--config", "/etc/mcpfast/mcpfast.toml"]
