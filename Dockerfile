# A small image of the homeserver. Build: docker build -t homeserver .
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY homeserver ./homeserver
COPY storage ./storage
COPY federation ./federation
RUN pip install --no-cache-dir . && useradd --system --home /data homeserver && mkdir -p /data \
    && chown homeserver /data
USER homeserver
WORKDIR /data
ENTRYPOINT ["python", "-m", "homeserver"]
