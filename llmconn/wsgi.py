"""WSGI entry point (admin and API under gunicorn's sync workers)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmconn.settings")

application = get_wsgi_application()
