# sqlx-os as a sidecar: slim Python, non-root, the proxy as entrypoint.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    SQLX_PROXY__LISTEN=0.0.0.0:6432 SQLX_HTTP__LISTEN=0.0.0.0:9187 SQLX_DATA_DIR=/var/lib/sqlx

WORKDIR /opt/sqlx-os
COPY pyproject.toml README.md ./
COPY proxy proxy
COPY air air
COPY agents agents
COPY models models
COPY config config
COPY cli cli
COPY bench bench
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /var/lib/sqlx --create-home sqlx

USER sqlx
EXPOSE 6432 6033 9187
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:9187/healthz', timeout=2).status != 200)"
ENTRYPOINT ["sqlxos", "proxy"]
