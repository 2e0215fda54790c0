# Gatekeeper API server: gunicorn workers over SQLite (a volume) or Postgres (GATEKEEPER_DATABASE_URL).
# Run exactly one `gatekeeper scheduler` beside any number of these (see README, "Production").
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

VOLUME /data
EXPOSE 8000
# `serve` creates or upgrades the schema before it starts the workers.
CMD ["gatekeeper", "serve", "--bind", "0.0.0.0:8000", "--workers", "4"]
