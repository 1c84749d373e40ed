# SAINet images, one Dockerfile, four stages:
#   builder    builds the project wheel (nothing else leaves it)
#   train      python:3.11-slim + the `train,cpu` extras (torch from the CPU wheel index): the one-shot
#              trainer and seeder jobs of docker-compose.yml
#   serve-cpu  python:3.11-slim + the `cpu` extra (onnxruntime), no torch
#   serve-gpu  CUDA 12 / cuDNN 9 runtime + the `gpu` extra (onnxruntime-gpu), no torch (the default
#              target, so it stays the last stage of this file)
#
#   docker build -t sainet:serve-gpu .
#   docker build --target serve-cpu -t sainet:serve-cpu .
#   docker build --target train -t sainet:train .
#
# The serving images read model artifacts (<name>/<version>/model.onnx + meta.json) from a volume
# mounted at /models and run as the unprivileged user 10001.

# ---------------------------------------------------------------------------------------------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY sainet/ sainet/
COPY model/ model/
COPY export/ export/
COPY service/ service/
# Only the project's own wheel (each final stage resolves the dependencies of its own extras), plus
# one requirements file per final stage naming the wheel with those extras.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/dist . \
    && set -- /tmp/dist/sainet-*.whl \
    && [ "$#" -eq 1 ] && [ -f "$1" ] \
    && printf '%s[train,cpu]\n' "$1" > /tmp/dist/train.txt \
    && printf '%s[cpu]\n' "$1" > /tmp/dist/serve-cpu.txt \
    && printf '%s[gpu]\nonnxruntime-gpu>=1.19,<1.27\n' "$1" > /tmp/dist/serve-gpu.txt

# ---------------------------------------------------------------------------------------------------
FROM python:3.11-slim AS train

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    MPLBACKEND=Agg \
    SAINET_MODEL_DIR=/models

RUN useradd --system --no-log-init --uid 10001 --user-group --create-home --home-dir /home/sainet \
        --shell /usr/sbin/nologin sainet \
    && install -d -o 10001 -g 10001 /work /models \
    && python -m venv /opt/venv

# torch comes from the CPU wheel index (PyPI's Linux torch wheels pull the CUDA libraries); the
# `train` extra's range accepts it, so installing the extras below keeps it.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch>=2.4,<2.14"

COPY --from=builder /tmp/dist/ /tmp/dist/
RUN pip install --no-cache-dir --requirement /tmp/dist/train.txt \
    && rm -rf /tmp/dist \
    && python -c "import torch, onnxruntime; print('torch', torch.__version__, 'onnxruntime', onnxruntime.__version__)"

WORKDIR /work
USER 10001:10001
CMD ["sainet", "--help"]

# ---------------------------------------------------------------------------------------------------
FROM python:3.11-slim AS serve-cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    SAINET_MODEL_DIR=/models

RUN useradd --system --no-log-init --uid 10001 --user-group --create-home --home-dir /home/sainet \
        --shell /usr/sbin/nologin sainet \
    && install -d -o 10001 -g 10001 /models \
    && python -m venv /opt/venv

COPY --from=builder /tmp/dist/ /tmp/dist/
RUN pip install --no-cache-dir --requirement /tmp/dist/serve-cpu.txt \
    && rm -rf /tmp/dist \
    && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)"

WORKDIR /home/sainet
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/live', timeout=4)"]
CMD ["sainet", "serve", "--host", "0.0.0.0", "--port", "8000"]

# ---------------------------------------------------------------------------------------------------
# onnxruntime-gpu 1.19-1.26 on PyPI are built for CUDA 12.x + cuDNN 9.x; 1.27 and later for CUDA 13.
# This image is CUDA 12 (drivers >= 525 through minor-version compatibility), so the range is capped
# here rather than in pyproject.toml. For CUDA 13 use a 13.x base image and drop the cap.
FROM nvidia/cuda:12.9.1-cudnn-runtime-ubuntu22.04 AS serve-gpu

ARG DEBIAN_FRONTEND=noninteractive
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    SAINET_MODEL_DIR=/models \
    SAINET_REQUIRE_GPU=1

# Ubuntu 22.04 ships Python 3.11 in universe (its default python3 is 3.10).
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11=3.11.* python3.11-venv=3.11.* \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-log-init --uid 10001 --user-group --create-home --home-dir /home/sainet \
        --shell /usr/sbin/nologin sainet \
    && install -d -o 10001 -g 10001 /models \
    && python3.11 -m venv /opt/venv

COPY --from=builder /tmp/dist/ /tmp/dist/
RUN pip install --no-cache-dir --requirement /tmp/dist/serve-gpu.txt \
    && rm -rf /tmp/dist \
    && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)"

WORKDIR /home/sainet
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/live', timeout=4)"]
CMD ["sainet", "serve", "--host", "0.0.0.0", "--port", "8000"]
