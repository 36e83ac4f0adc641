# syntax=docker/dockerfile:1
# The agent on x86-64: CPU (default) or NVIDIA GPU through the CUDA provider.
#
#   docker build -t agent:cpu .
#   docker build --build-arg VARIANT=cuda -t agent:cuda .
#   docker run -d --name agent --network host --restart unless-stopped \
#       [--gpus all] --device /dev/video0 \
#       -v agent-state:/var/lib/agent -v /etc/agent:/etc/agent:ro agent:cpu
#
# Both variants install the wheel with exactly the versions in requirements.lock (the same
# pins `make` installs); the cuda variant swaps onnxruntime for onnxruntime-gpu at the same
# version, with CUDA and cuDNN from NVIDIA's pip wheels (the host needs only the driver).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: the wheel and a venv with its pinned runtime dependencies ----------------------
FROM ${PYTHON_IMAGE} AS build
ARG AGENT_VERSION=0.1.0
ARG VARIANT=cpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY agent ./agent
COPY models ./models
COPY systemd ./systemd
COPY docker/requirements.py ./docker/requirements.py
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/agent \
 && ORT=$([ "${VARIANT}" = cuda ] && echo "onnxruntime-gpu[cuda,cudnn]" || echo onnxruntime) \
 && python docker/requirements.py "/wheels/edge_embedding_agent-${AGENT_VERSION}-py3-none-any.whl" \
        --onnxruntime "${ORT}" --constraints requirements.lock --extra prometheus --extra fleet > /tmp/requirements.txt \
 && /opt/agent/bin/pip install --no-cache-dir -r /tmp/requirements.txt \
 && /opt/agent/bin/pip install --no-cache-dir --no-deps "/wheels/edge_embedding_agent-${AGENT_VERSION}-py3-none-any.whl" \
 && /opt/agent/bin/agent --version

# ---- runtime: the venv on the same slim Python, non-root --------------------------------------
FROM ${PYTHON_IMAGE}
RUN groupadd --system agent \
 && useradd --system --gid agent --groups video --home-dir /var/lib/agent --shell /usr/sbin/nologin agent \
 && mkdir -p /var/lib/agent /etc/agent \
 && chown agent:agent /var/lib/agent
COPY --from=build /opt/agent /opt/agent
COPY systemd/agent.toml /etc/agent/agent.toml
ENV PATH=/opt/agent/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    AGENT_CONFIG=/etc/agent/agent.toml \
    AGENT_STATE_DIR=/var/lib/agent
USER agent
WORKDIR /var/lib/agent
VOLUME ["/var/lib/agent"]
HEALTHCHECK --interval=30s --timeout=10s --start-period=10m --retries=3 CMD ["agent", "status", "--json"]
ENTRYPOINT ["agent"]
CMD ["run"]
