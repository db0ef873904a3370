# The lr-sweeps image: every `sweeps` command, with `sweeps` as the entrypoint:
#   docker build -t lr-sweeps .                                  # CPU torch (the default)
#   docker build -t lr-sweeps:cu128 --build-arg TORCH_INDEX=cu128 .   # a CUDA build of torch
#   docker run --rm lr-sweeps worker --study NAME                # storage from $SWEEPS_STORAGE
# TORCH_INDEX names one of PyTorch's wheel indexes (cpu, cu126, cu128, ...) that has
# TORCH_VERSION; the default version is the one constraints.txt pins for the tests.
FROM python:3.11-slim

ARG TORCH_INDEX=cpu
ARG TORCH_VERSION=2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SWEEPS_ARTIFACTS=/artifacts

# torch first, from PyTorch's own index: the project's install below then finds it
# satisfied instead of pulling PyPI's default torch (a multi-GB CUDA build).
RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_INDEX}" \
        "torch==${TORCH_VERSION}"

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
