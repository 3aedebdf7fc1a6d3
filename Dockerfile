# battery-worker as a container: slim base, non-root, graceful stop on SIGTERM.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY battery_worker ./battery_worker
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 worker
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER worker
ENTRYPOINT ["battery-worker"]
CMD ["run"]
