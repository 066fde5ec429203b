# syntax=docker/dockerfile:1
#
# One image for both kaudit processes:
#   - the operator (default command `kaudit run`), which runs as the unprivileged user 65532;
#   - the node-side policy installer (`kaudit install-policy`), whose DaemonSet pod sets
#     runAsUser: 0 itself, because the policy directory under /etc/kubernetes belongs to root.
#
# The runtime stage writes nothing outside /tmp, so both pods run with readOnlyRootFilesystem: true
# (the operator with an emptyDir on /tmp): bytecode is compiled at build time and Python is told
# not to write more.
#
# The build installs wheels only, offline: scripts/build-image builds them (kaudit and its
# dependencies at the versions of constraints.txt) into dist/image/wheels and runs this file:
#
#   scripts/build-image                                   # podman, a Debian base made with mmdebstrap
#   CONTAINER_ENGINE=docker scripts/build-image --base python:3.11-slim-bookworm
#
# Any base image with python3 (and a shell for the build stage's RUN) works, through PYTHON_IMAGE;
# the wheels must be built for its Python version.

# A slim Debian-based CPython, pinned by minor version and Debian release (never `latest`); the
# Python of Debian bookworm, whose base scripts/build-image makes by default.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build stage: a virtual environment with kaudit and its runtime dependencies -------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY dist/image/wheels/ /wheels/
# pip runs from its wheel, so the virtual environment gets none; its install report (every
# package, version and wheel sha256) stays in the image as a software bill of materials.
# Hash-based bytecode: the same sources give the same .pyc files whatever their mtimes.
RUN python3 -m venv --without-pip /opt/kaudit \
    && set -- /wheels/pip-*.whl \
    && /opt/kaudit/bin/python "$1/pip" install --quiet --no-index --find-links /wheels --no-compile \
        --report /opt/kaudit/pip-install-report.json kaudit \
    && /opt/kaudit/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/kaudit/lib \
    && /opt/kaudit/bin/kaudit --version

# --- runtime stage: the virtual environment only; no compiler, no pip, no wheels, no sources --
FROM ${PYTHON_IMAGE} AS runtime
# An ARG declared before the first FROM is visible inside a stage only when declared there again.
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="kaudit" \
      org.opencontainers.image.description="Kubernetes operator that provisions API-server audit log collection for the Datadog Agent" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
COPY --from=build /opt/kaudit /opt/kaudit
ENV PATH=/opt/kaudit/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
WORKDIR /tmp
# A numeric user and group, so Kubernetes can verify runAsNonRoot without a passwd lookup.
# 65532 is not defined in the base image's /etc/passwd; HOME is /tmp (a writable emptyDir).
USER 65532:65532
ENTRYPOINT ["kaudit"]
CMD ["run"]
