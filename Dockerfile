# The Python services of Floodgate (online, ingest api/worker, the simulator, migrations) in one image;
# compose.yaml picks the process with `command:`. For Docker users only: `make up` needs no container.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# An editable install, as in the local venv: the code finds migrations/, config/ and gateway/ next to
# itself (cluster/migrate.py, cluster/envoy.py look there), exactly as `make up` does.
COPY pyproject.toml README.md* ./
COPY libs ./libs
COPY services ./services
COPY cluster ./cluster
COPY migrations ./migrations
COPY config ./config
COPY gateway ./gateway
# The toolkit is its own distribution (libs/floodgate/pyproject.toml), which the project depends on.
RUN pip install -e './libs/floodgate[pg]' -e .

# Never run the services as root inside a container. A numeric user, so that Kubernetes can check
# runAsNonRoot (deploy/kubernetes: runAsUser 10001).
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin floodgate
USER 10001

# Each service binds 0.0.0.0 inside its container (compose sets <PREFIX>_HOST); ports and settings come
# from the same variables `make up` uses.
CMD ["python", "-m", "services.online"]
