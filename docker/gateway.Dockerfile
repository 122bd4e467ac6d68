# syntax=docker/dockerfile:1
# Arbiter gateway: `arbiter gateway` routing OIP requests to model wrapper releases.
#
#   docker build -f docker/gateway.Dockerfile -t arbiter-gateway:0.1.0 .
#   docker build -f docker/gateway.Dockerfile --build-arg EXTRAS=all \
#       -t arbiter-gateway:0.1.0-explain .          # with the Alibi explainers
#   docker run --rm -p 8000:8000 -p 8001:8001 \
#       -v "$PWD/gateway.yaml:/etc/arbiter/gateway.yaml:ro" \
#       --tmpfs /var/lib/arbiter:uid=10001,gid=10001 arbiter-gateway:0.1.0
#
# Build args:
#   EXTRAS           project extras ("" by default; "all" adds explainers, which pulls torch)
#   TORCH_INDEX_URL  wheel index for torch when EXTRAS needs it (CPU-only wheels)
#
# One process, `arbiter`, as uid 10001, read-only root filesystem friendly. The
# decision log (SQLite) needs a writable /var/lib/arbiter: the chart mounts an
# emptyDir or a PersistentVolumeClaim there.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG EXTRAS=""
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/arbiter \
    PATH=/opt/arbiter/bin:$PATH
RUN python -m venv "$VIRTUAL_ENV"
WORKDIR /src
COPY pyproject.toml README.md ./
# torch (only for EXTRAS=torch/all) from the CPU index, pinned by pyproject.toml.
# hadolint ignore=DL3013
RUN --mount=type=cache,target=/root/.cache/pip \
    set -eu; \
    case ",${EXTRAS}," in \
      *,torch,*|*,all,*) \
        torch_req="$(python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["torch"])')"; \
        pip install --index-url "${TORCH_INDEX_URL}" "${torch_req}" ;; \
    esac
COPY protos ./protos
COPY gateway ./gateway
COPY routers ./routers
COPY wrappers ./wrappers
COPY explain ./explain
# The project itself; its dependencies are pinned by pyproject.toml.
# hadolint ignore=DL3013
RUN --mount=type=cache,target=/root/.cache/pip \
    set -eu; \
    spec="."; if [ -n "${EXTRAS}" ]; then spec=".[${EXTRAS}]"; fi; \
    pip install "${spec}"; \
    arbiter --help >/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="arbiter-gateway" \
      org.opencontainers.image.description="Arbiter gateway: shadow, champion/challenger and bandit routing over the Open Inference Protocol" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 arbiter \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin arbiter \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/arbiter
COPY --from=build /opt/arbiter /opt/arbiter
ENV PATH=/opt/arbiter/bin:$PATH \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
USER 10001:10001
VOLUME ["/var/lib/arbiter"]
# REST (with /metrics) and gRPC.
EXPOSE 8000 8001
# SIGTERM (the default stop signal) makes the gateway drain in-flight requests.
ENTRYPOINT ["arbiter"]
CMD ["gateway", "--config", "/etc/arbiter/gateway.yaml"]
