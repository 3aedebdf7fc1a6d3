# battery-worker as a container: slim base, non-root, graceful stop on SIGTERM, JSON logs,
# metrics and probes on port 9400 (/metrics, /health, /ready, /live), of the worker or the monitor
# (one of them per container: each has its own port setting).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY battery_worker ./battery_worker
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 worker
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
ENV PYTHONUNBUFFERED=1 \
    BATTERY_WORKER_LOG_FORMAT=json \
    BATTERY_WORKER_WORKER__METRICS_HOST=0.0.0.0 \
    BATTERY_WORKER_WORKER__METRICS_PORT=9400 \
    BATTERY_WORKER_MONITOR__METRICS_HOST=0.0.0.0 \
    BATTERY_WORKER_MONITOR__METRICS_PORT=9400
EXPOSE 9400
USER 10001
# The worker finishes its in-flight batch, commits and exits 0 on SIGTERM, within
# worker.shutdown_timeout_s (20 s): keep the orchestrator's grace period above that (Kubernetes: 30 s).
STOPSIGNAL SIGTERM
# /live, not /health: an unhealthy container is replaced where the runtime acts on it (ECS, Swarm), and a
# broker outage is not cured by a restart (the worker backs off and carries on by itself).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9400/live', timeout=4)"]
ENTRYPOINT ["battery-worker"]
CMD ["run"]
