# gradserve: a small, non-root image. Build: docker build -t gradserve:1.0.0 .
# The build stage installs the project and its wheels into a venv; the runtime stage copies
# only that venv and the source, so no compiler, cache or build backend is left behind.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY autograd autograd
COPY service service
COPY client client
RUN /opt/venv/bin/pip install .

FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GRADSERVE_BIND=0.0.0.0:8000
RUN groupadd --system --gid 10001 gradserve \
 && useradd --system --uid 10001 --gid gradserve --no-create-home --shell /usr/sbin/nologin gradserve
COPY --from=build /opt/venv /opt/venv
# The source as well, owned by root and read-only to the service: CMD names the gunicorn
# config by its path under WORKDIR, as `make serve` does in a checkout.
WORKDIR /app
COPY autograd autograd
COPY service service
COPY client client
# The example models; mount a folder over it (docker-compose.yml does) to serve others.
COPY models models
ENV GRADSERVE_MODELS_DIR=/app/models
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['GRADSERVE_BIND'].rpartition(':')[2], timeout=2)"]
CMD ["gunicorn", "--config", "service/gunicorn.conf.py", "service.wsgi:app"]
