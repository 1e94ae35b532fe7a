# syntax=docker/dockerfile:1
#
# CoE Gateway image. Build from the repository root:
#   docker build -t coe-gateway .
# Run with a config mounted at /etc/coe/config.toml (see deploy/README.md):
#   docker run -p 8000:8000 -v "$PWD/config.toml:/etc/coe/config.toml:ro" coe-gateway
# The container binds 0.0.0.0, which the gateway only allows when the config has [[tenants]]
# (API keys) or sets server.allow_unauthenticated_public_bind = true.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: build the project's wheel and install it, with its dependencies, into a venv ----
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY providers ./providers
COPY policies ./policies
COPY coe_client ./coe_client
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install /wheels/*.whl \
 && /opt/venv/bin/coe --help > /dev/null

# ---- runtime: the venv alone, run by an unprivileged user ----
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="CoE Gateway" \
      org.opencontainers.image.description="OpenAI-compatible gateway answering with cascading ensembles" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    COE_HEALTHCHECK_URL=http://127.0.0.1:8000/healthz
RUN groupadd --system --gid 10001 coe \
 && useradd --system --uid 10001 --gid coe --home-dir /var/lib/coe --create-home \
        --shell /usr/sbin/nologin coe \
 && mkdir -p /etc/coe
COPY --from=builder /opt/venv /opt/venv
# A relative SQLite ledger (sqlite:///coe.db) lands here, in the user's own directory.
WORKDIR /var/lib/coe
USER 10001:10001
EXPOSE 8000
# The slim image has no curl; the venv's Python asks /healthz (urlopen raises on non-2xx).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['COE_HEALTHCHECK_URL'], timeout=2)"]
ENTRYPOINT ["coe"]
CMD ["serve", "--config", "/etc/coe/config.toml", "--host", "0.0.0.0", "--port", "8000"]
