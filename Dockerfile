# The streamheal worker image (for docker-compose users; development here needs no Docker).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
COPY config ./config
RUN pip install --no-cache-dir .
ENTRYPOINT ["streamheal"]
CMD ["run", "-c", "config/streamheal.toml"]
