# cf-images-exporter: the CLI (export, fleet, inspect) and a Dask worker, installed from the
# lock file (exact versions, sha256-checked), running as a non-root user.
#   docker build -t cf-images-exporter .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY exporter ./exporter
# The dependencies and the build backend come from the lock; nothing else is resolved here.
RUN pip install --no-deps --no-build-isolation . && rm -rf /app/build

RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin exporter
USER 10001
WORKDIR /home/exporter

ENTRYPOINT ["cf-images-export"]
CMD ["--help"]
