"""The OpenAI-compatible endpoints under /v1/ (chat completions, embeddings, models)."""

urlpatterns: list = []
