"""The OpenAI-compatible gateway: /v1/chat/completions, /v1/embeddings, /v1/models.

Async views, served by llmconn.asgi (its GATEWAY_ROUTES is the /v1 route table). A call reads
top to bottom through three modules:

1. `request`: the body read, parsed and checked (limits, forbidden fields, types).
2. `planning`: API key, throttle, resolution of `model`, budgets -> a calls.Plan (warm path on
   the event loop with one Redis round trip, WarmCheck; else on the sync thread).
3. `views`: the call to the provider (with fallbacks), the usage row, the answer (JSON or SSE).

`errors` holds the error answers in OpenAI's format.
"""
