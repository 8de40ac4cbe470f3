# Sluice: one image for every role.
#   docker run IMAGE                 -> `sluice api`    (HTTP on $SLUICE_API_HOST:$SLUICE_API_PORT)
#   docker run IMAGE sluice worker   -> Temporal worker (scale by starting more of these)
# Configuration is SLUICE_* environment variables only (see sluice/settings.py and docker-compose.yml).

# ---- build: install the project and its dependencies into a self-contained virtualenv ----
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/sluice
WORKDIR /src
COPY . .
RUN /opt/sluice/bin/pip install .

# ---- runtime ----
FROM python:3.11-slim

ENV PATH=/opt/sluice/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SLUICE_DATA_DIR=/var/lib/sluice \
    SLUICE_API_HOST=0.0.0.0 \
    SLUICE_API_PORT=8080

RUN groupadd --system --gid 10001 sluice \
 && useradd --system --uid 10001 --gid sluice --home-dir /var/lib/sluice --create-home \
        --shell /usr/sbin/nologin sluice

COPY --from=build /opt/sluice /opt/sluice

# Working directory is writable by the service user: SLUICE_DATA_DIR (only used when no
# SLUICE_DATABASE_URL / SLUICE_STORAGE_URL is set) and an optional .env file live here.
WORKDIR /var/lib/sluice
USER sluice

EXPOSE 8080

# No HEALTHCHECK here on purpose: workers run from this same image and serve no HTTP, so a
# baked-in /health probe would mark every worker unhealthy. docker-compose.yml defines the
# API's probe (GET /health) on the api service only.
CMD ["sluice", "api"]
