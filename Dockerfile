# agentrag chat API on the CPU, with the bundled MiniLM embedding model. The chat model is any
# OpenAI-compatible endpoint (AGENTRAG_LLM_BASE_URL); see docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    AGENTRAG_DATA_DIR=/data

WORKDIR /app

# torch first, from the CPU index: the default index would pull the CUDA build (gigabytes).
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md ./
COPY agent ./agent
COPY graphs ./graphs
COPY prompts ./prompts
COPY retrievers ./retrievers
COPY server ./server
COPY tools ./tools
COPY eval ./eval
COPY cli ./cli
RUN pip install ".[models]"

RUN useradd --system --create-home --uid 10001 agentrag \
    && mkdir -p /data && chown agentrag /data
USER agentrag
VOLUME ["/data"]
EXPOSE 8000

# Ready only when the vector store, the thread store and the chat model answer.
HEALTHCHECK --interval=15s --timeout=10s --start-period=120s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=8)"]

CMD ["agentrag", "serve", "--host", "0.0.0.0", "--port", "8000"]
