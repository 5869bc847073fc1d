# A small image of the homeserver. Build: docker build -t homeserver .
# Run:   docker run -p 8008:8008 -v hs-data:/data -e HOMESERVER_SERVER_NAME=example.org homeserver
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY homeserver ./homeserver
COPY storage ./storage
COPY federation ./federation
RUN pip install --no-cache-dir . && useradd --system --home /data homeserver && mkdir -p /data \
    && chown homeserver /data
USER homeserver
ENV HOMESERVER_LISTEN=0.0.0.0:8008 HOMESERVER_DATA_DIR=/data
EXPOSE 8008
VOLUME /data
ENTRYPOINT ["python", "-m", "homeserver"]
