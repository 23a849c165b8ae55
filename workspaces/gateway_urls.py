"""The OpenAI-compatible endpoints under /v1/ (chat completions, embeddings, models)."""

from django.urls import path, re_path

from . import gateway

urlpatterns = [
    path("chat/completions", gateway.chat_completions, name="gateway-chat"),
    path("embeddings", gateway.embeddings, name="gateway-embeddings"),
    path("models", gateway.models, name="gateway-models"),
    path("models/<path:model_id>", gateway.models, name="gateway-model"),
    re_path(r"^(?P<path>.*)$", gateway.not_found),
]
