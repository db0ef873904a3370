# The lr-sweeps image: every `sweeps` command, with `sweeps` as the entrypoint:
#   docker build -t lr-sweeps .                                  # CPU torch (the default)
#   docker build -t lr-sweeps:cu128 --build-arg TORCH_INDEX=cu128 .   # a CUDA build of torch
#   docker run --rm --init lr-sweeps worker --study NAME         # storage from $SWEEPS_STORAGE
# TORCH_INDEX names one of PyTorch's wheel indexes (cpu, cu126, cu128, ...) that has
# TORCH_VERSION; the default version is the one constraints.txt pins for the tests.
# TORCH_FIND_LINKS (a wheel directory's URL, as pip's --find-links) takes torch from there
# instead. BASE_IMAGE: any Debian-like image with python3 >= 3.11 and its venv module;
# deploy/docker/build-local.sh builds one with debootstrap and serves a local torch wheel,
# for machines that reach no image registry.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_INDEX=cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_FIND_LINKS=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SWEEPS_ARTIFACTS=/artifacts \
    LANG=C.UTF-8 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# A virtual environment: a distribution's python3 refuses a system-wide pip install (PEP 668).
RUN python3 -m venv /opt/venv

# torch first, from PyTorch's own index (or TORCH_FIND_LINKS): the project's install below
# then finds it satisfied instead of pulling PyPI's default torch (a multi-GB CUDA build).
RUN if [ -n "$TORCH_FIND_LINKS" ]; then \
        pip install --find-links "$TORCH_FIND_LINKS" "torch==${TORCH_VERSION}"; \
    else \
        pip install --index-url "https://download.pytorch.org/whl/${TORCH_INDEX}" \
            "torch==${TORCH_VERSION}"; \
    fi

WORKDIR /app
COPY pyproject.toml README.md ./
COPY schedules schedules
COPY objectives objectives
COPY sweeps sweeps
COPY storage storage
RUN pip install . && sweeps --help > /dev/null

# Not root. /artifacts exists and belongs to that user, so a fresh named volume mounted
# there (compose) starts with the same owner; Kubernetes sets it with fsGroup.
RUN useradd --create-home --uid 1000 sweeps && install -d -o sweeps -g sweeps /artifacts
USER sweeps
WORKDIR /home/sweeps

ENTRYPOINT ["sweeps"]
CMD ["--help"]
