# dispatchd server image. Build: `make image` (buildah or docker); see docs/deploy.md.
#
# Stage 1 builds wheels for dispatchd and its dependencies and installs them into a venv;
# stage 2 is the plain Python runtime plus that venv: no compiler, no pip cache, no sources.
# BASE_IMAGE must provide python3.11 with the venv module (python:3.11-slim does; so does a
# Debian bookworm rootfs with python3-venv, which is how `make image` builds offline).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# For builds behind a package mirror or a TLS-inspecting proxy (e.g. PIP_CERT pointing at a
# CA bundle mounted into the build); empty by default. Build stage only: nothing is kept.
ARG PIP_INDEX_URL
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server/ server/
COPY clients/python/ clients/python/
# Pinned through pyproject.toml; the wheels of dispatchd and of dispatchd-client (its stubs and
# dispatchctl) are built from the sources above, in one pip call so the server's pin resolves
# to this client. Bytecode is compiled here, so the read-only root filesystem costs no start-up.
RUN python3 -m venv /opt/dispatchd \
 && /opt/dispatchd/bin/pip install ./clients/python . \
 && /opt/dispatchd/bin/pip uninstall --yes pip setuptools wheel

FROM ${BASE_IMAGE}
# A fixed, unprivileged UID/GID so volumes and securityContext.runAsUser can name it.
ARG UID=10001
RUN groupadd --gid "${UID}" dispatchd \
 && useradd --uid "${UID}" --gid dispatchd --no-create-home --no-log-init \
      --home-dir /nonexistent --shell /usr/sbin/nologin dispatchd \
 && mkdir -p /var/lib/dispatchd \
 && chown "${UID}:${UID}" /var/lib/dispatchd
COPY --from=build /opt/dispatchd /opt/dispatchd
# The server reads every flag from DISPATCHD_<FLAG> too; the command line wins, so a
# `docker run IMAGE --drain-grace 10` or a Kubernetes `args:` adds to these.
ENV PATH=/opt/dispatchd/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DISPATCHD_LISTEN=0.0.0.0:50051 \
    DISPATCHD_HEALTH_LISTEN=0.0.0.0:8081 \
    DISPATCHD_METRICS_LISTEN=0.0.0.0:9090 \
    DISPATCHD_DATA_DIR=/var/lib/dispatchd
USER ${UID}:${UID}
WORKDIR /var/lib/dispatchd
VOLUME ["/var/lib/dispatchd"]
# gRPC, plaintext health for probes, Prometheus metrics.
EXPOSE 50051 8081 9090
# SIGTERM starts the drain; exec form so the server is PID 1 and gets it.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/dispatchd/bin/dispatchd"]
CMD []
