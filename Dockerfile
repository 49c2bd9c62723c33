# inbound: one image, every role (`inbound serve --roles ...`).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY inbound ./inbound
COPY schemas ./schemas
RUN pip install --no-cache-dir . && useradd --system --uid 1000 inbound
USER inbound
EXPOSE 2525
ENTRYPOINT ["inbound"]
CMD ["serve", "--config", "/etc/inbound/inbound.toml"]
