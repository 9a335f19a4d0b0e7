# The streamheal worker image (for docker-compose users; development here needs no Docker).
# A build stage compiles the one C extension (the detectors' inner loops, setup.py) into a
# wheel; the slim runtime image needs no compiler. Without the build stage the worker
# would still run, with numpy doing those loops (about 2 us per event slower).
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY config ./config
ENTRYPOINT ["streamheal"]
CMD ["run", "-c", "config/streamheal.toml"]
