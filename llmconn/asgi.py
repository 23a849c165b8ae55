"""ASGI entry point: the production server (uvicorn, or gunicorn with uvicorn workers).

The OpenAI-compatible /v1 endpoints are async views and stream over ASGI.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmconn.settings")

application = get_asgi_application()
