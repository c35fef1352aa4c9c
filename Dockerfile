FROM python:3.11-slim
WORKDIR /app
# CPU torch keeps the image small; swap for a CUDA build to embed and search on a GPU.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY memsvc memsvc
COPY api api
COPY workers workers
COPY kernels kernels
COPY migrations migrations
RUN pip install --no-cache-dir .
ENV MEMSVC_HOST=0.0.0.0 MEMSVC_PORT=8000 HF_HUB_OFFLINE=1
EXPOSE 8000
CMD ["memsvc", "serve"]
