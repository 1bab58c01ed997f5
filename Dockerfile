# Sprout with the embedded CPU model and SQLite by default. For production, name a vLLM server as a backend:
#   docker run -p 8000:8000 -e SPROUT_DATABASE_URL=postgresql://... -e SPROUT_DEFAULT_BACKEND=vllm \
#     -e SPROUT_BACKENDS='{"vllm": {"kind": "openai", "base_urls": ["http://vllm-0:8000/v1", "http://vllm-1:8000/v1"], "model": "my-model"}}' sprout
# Worker processes from the same image, as many as you like, against the same PostgreSQL (see docs/SCALING.md);
# the API instances may then leave the jobs to them with -e SPROUT_WORKER_ENABLED=false:
#   docker run -e SPROUT_DATABASE_URL=postgresql://... -e SPROUT_BACKENDS=... -p 9464:9464 sprout \
#     sprout worker --metrics-port 9464 --metrics-host 0.0.0.0
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
# Compiles llama.cpp (several minutes) for AVX2, so the image runs on any recent x86-64 host (see Makefile);
# the wheels are reused by the runtime stage.
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
RUN pip wheel --wheel-dir /wheels '.[local]'

FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* && useradd --create-home sprout
WORKDIR /app
COPY --from=build /wheels /wheels
COPY . .
RUN pip install --no-cache-dir --find-links /wheels -e '.[local]' && rm -rf /wheels \
    && mkdir -p /app/data && chown -R sprout /app/data
USER sprout
ENV SPROUT_DATABASE_URL=sqlite:////app/data/sprout.db
EXPOSE 8000
VOLUME ["/app/data"]
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["sprout", "serve", "--host", "0.0.0.0", "--port", "8000", "--bootstrap"]
