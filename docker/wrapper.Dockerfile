# syntax=docker/dockerfile:1
# Arbiter model wrapper: `arbiter serve-model` for sklearn, ONNX and PyTorch (CPU) models.
#
#   docker build -f docker/wrapper.Dockerfile -t arbiter-wrapper:0.1.0 .
#   docker run --rm -p 8080:8080 -p 8081:8081 -v "$PWD/models:/mnt/models:ro" \
#       arbiter-wrapper:0.1.0 serve-model --framework sklearn \
#       --model /mnt/models/model.joblib --name credit-lr
#
# Build args:
#   EXTRAS           project extras to install (default "torch"; "" for sklearn/ONNX only,
#                    "all" to add the explainers and demo tools)
#   TORCH_INDEX_URL  wheel index for torch (CPU-only wheels by default)
#
# The image runs one process, `arbiter`, as uid 10001 and works with a read-only root
# filesystem (bytecode is compiled at build time; caches go to HOME=/tmp).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG EXTRAS=torch
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/arbiter \
    PATH=/opt/arbiter/bin:$PATH
RUN python -m venv "$VIRTUAL_ENV"
WORKDIR /src
COPY pyproject.toml README.md ./
# torch first, from the CPU index, at the version pinned in pyproject.toml: a layer of
# its own that survives source changes, and the later install finds it satisfied.
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
LABEL org.opencontainers.image.title="arbiter-wrapper" \
      org.opencontainers.image.description="Arbiter model wrapper (Open Inference Protocol over REST and gRPC)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 arbiter \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin arbiter
COPY --from=build /opt/arbiter /opt/arbiter
ENV PATH=/opt/arbiter/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
USER 10001:10001
# REST (with /metrics) and gRPC.
EXPOSE 8080 8081
# SIGTERM (the default stop signal) makes the server drain in-flight requests.
ENTRYPOINT ["arbiter"]
# The Helm chart replaces these with explicit flags; the settings file names the
# framework, model name and artifact uri.
CMD ["serve-model", "--settings", "/etc/arbiter/settings.yaml"]
