# Production image: slim Python, non-root, stateless (state lives in the configured store).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY rails ./rails
COPY config ./config
# gateway/defaults/railgate.yaml links to config/railgate.yaml; the wheel carries the file itself.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 RAILGATE_CONFIG=/etc/railgate/railgate.yaml
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin railgate
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY config/railgate.yaml /etc/railgate/railgate.yaml
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["railgate"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
