# escalator: the service image. `escalator serve` is the entry point; configure it with ESCALATOR_*.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY escalator ./escalator
RUN python -m venv /opt/escalator \
    && /opt/escalator/bin/pip install --no-cache-dir -c constraints.txt .

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --home-dir /var/lib/escalator --create-home escalator
COPY --from=build /opt/escalator /opt/escalator
ENV PATH=/opt/escalator/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ESCALATOR_HOST=0.0.0.0 \
    ESCALATOR_PORT=8080 \
    ESCALATOR_LOG_FORMAT=json
WORKDIR /var/lib/escalator
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ESCALATOR_PORT', '8080'), timeout=2)"]
CMD ["escalator", "serve"]
