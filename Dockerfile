# rerankd on CPU: `docker build -t rerankd .` then
#   docker run -p 8000:8000 -v $HOME/.cache/huggingface:/home/rerankd/.cache/huggingface rerankd \
#       --model bge=BAAI/bge-reranker-v2-m3
# Every flag also has a RERANKD_* env var twin (RERANKD_MODELS, RERANKD_API_KEY, RERANKD_CACHE, ...).
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/rerankd
ENV PATH=/opt/rerankd/bin:$PATH
# The CPU build of the pinned torch first (the PyPI wheel would pull the CUDA one), then rerankd itself.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md /src/
COPY src /src/src
RUN pip install "/src[server]"

FROM python:3.11-slim

RUN useradd --create-home --uid 10001 rerankd
COPY --from=build /opt/rerankd /opt/rerankd
ENV PATH=/opt/rerankd/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RERANKD_HOST=0.0.0.0 \
    RERANKD_PORT=8000 \
    RERANKD_DEVICE=cpu
USER rerankd
WORKDIR /home/rerankd
EXPOSE 8000
# SIGTERM: stop accepting, finish in-flight requests (up to RERANKD_DRAIN_TIMEOUT_S), exit 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/ready' % os.environ.get('RERANKD_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["rerankd", "serve"]
