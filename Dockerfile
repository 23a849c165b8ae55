# One image for web, worker and beat (docker-compose.yml picks the command).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
# collectstatic needs settings that load; these build-time values are never used at run time.
RUN SECRET_KEY=build-only FERNET_KEYS=build-only-fernet AUDIT_HMAC_KEY=build-only-audit DEBUG=false \
    python manage.py collectstatic --noinput
# var/metrics: where docker-compose mounts the metrics volume (it takes this owner).
RUN useradd --system --home /app llmconn && mkdir -p /app/var/metrics && chown -R llmconn /app/var
USER llmconn
EXPOSE 8000
CMD ["gunicorn", "llmconn.asgi:application", "-c", "python:llmconn.gunicorn_conf", "-k", "uvicorn_worker.UvicornWorker", "-b", "0.0.0.0:8000", "-w", "2"]
