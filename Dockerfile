# Gatekeeper API server: gunicorn workers over SQLite (a volume) or Postgres (GATEKEEPER_DATABASE_URL).
# Run exactly one `gatekeeper scheduler` beside any number of these (compose.yaml does; README, "Docker").
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEKEEPER_POLICY_DIR=/app/policies \
    GATEKEEPER_DATABASE_URL=sqlite:////data/gatekeeper.db

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gatekeeper ./gatekeeper
COPY policies ./policies
RUN pip install --no-cache-dir ".[postgres]"

# Run unprivileged: the user owns only /data (the SQLite volume); the code stays root's, read-only to it.
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home --shell /usr/sbin/nologin gatekeeper \
    && mkdir -p /data \
    && chown gatekeeper:gatekeeper /data
USER gatekeeper:gatekeeper

VOLUME /data
EXPOSE 8000
# Ready means the database answers (GET /readyz); python is in the image, curl is not.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
# `serve` creates or upgrades the schema before it starts the workers.
CMD ["gatekeeper", "serve", "--bind", "0.0.0.0:8000", "--workers", "4"]
