# syntax=docker/dockerfile:1
# The neuron-operator image: the kopf operator only (the model runtime image is Dockerfile.neuron).
#   docker build -t neuron-operator:0.1.0 .
# Runs as UID 65532 with a read-only root filesystem (the Helm chart mounts an emptyDir at /tmp).

# Pinned by tag for readability; CI should pin the digest too, e.g. --build-arg
# PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> (and let Renovate/Dependabot bump it).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: our wheel plus wheels of every dependency, so the final stage installs offline -------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY runtime/ runtime/
RUN pip wheel --wheel-dir /wheels .

# --- final: the installed package and nothing else (no sources, no build tools) --------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="neuron-operator" \
      org.opencontainers.image.description="Kubernetes operator that compiles and serves LLMs on AWS Trainium/Inferentia" \
      org.opencontainers.image.licenses="Apache-2.0"
# No .pyc writes at runtime (the root filesystem is read-only); anything that wants a home gets /tmp.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The wheels are bind-mounted from the builder, so they never become a layer of this image; --no-index: exactly
# the versions the builder resolved. pip compiles the .pyc files at install time, so nothing is written at run
# time. pip, setuptools and wheel are removed afterwards: the operator needs none of them (fewer CVEs to scan).
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/neuron_operator-*.whl \
    && pip uninstall --yes pip setuptools wheel
# Numeric UID:GID (nonroot, as in distroless) so runAsNonRoot can be verified without an /etc/passwd entry.
USER 65532:65532
WORKDIR /tmp
# 8080: Prometheus metrics; 8081: kopf liveness (/healthz).
EXPOSE 8080 8081
# The console script from pyproject.toml. CMD is the default subcommand (one replica, every namespace); the chart
# replaces it with its own `run ...` args.
ENTRYPOINT ["neuron-operator"]
CMD ["run", "--all-namespaces", "--standalone"]
