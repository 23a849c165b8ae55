"""Talking to providers for connection tests and model discovery.

litellm is imported lazily, inside functions: importing it takes about 2.6 s, which must stay out
of web start-up (STACK-NOTES.md). Every outbound request leaves through providers.transport
(see "Outbound" below); litellm calls are also checked with `check_url` before they are made,
so a refused URL fails before litellm builds anything.

- `atest_connection(...)` makes one minimal real call: `acompletion` with `max_tokens=1`,
  `num_retries=0` and a timeout (an embedding call for embedding models; a models listing when
  no model is known). `litellm.check_valid_key` and `ahealth_check` are not used: the first
  takes no api_base, the second needs proxy-only packages.
- `alist_models(...)` lists the models live (the provider class's `list_request`: a direct GET
  of `{base}/models` for OpenAI-wire providers, Anthropic's `/v1/models`, Gemini's
  `/v1beta/models`) or returns the catalog's static list. litellm's `get_valid_models` is not
  used: it swallows every error and returns [], so a
  failed listing would look like "no models".
Failures raise `providers.errors.ProviderError` (error class + our own message). With OAuth
client credentials, an "auth" failure drops the cached token and retries once with a new one.

Outbound: every request here leaves through providers.transport (the one guarded transport:
address checked = address connected to, no redirects, verified TLS with the connection's
`ca_cert`). Tests the provider class can send itself (`test_request`: OpenAI and Anthropic
wire) and every listing use its httpx client
(`transport.httpx_client`) and read the answer up to MAX_TEST_RESPONSE_BYTES
(MAX_LIST_RESPONSE_BYTES for listings) within an overall deadline, so an upstream that hangs
or streams forever costs at most `timeout` seconds (listings `timeout + 5`) and a bounded
amount of memory. Other providers (Azure, Gemini, Vertex, Bedrock) go through litellm, which
is handed the transport's clients (providers.forward._litellm_call).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from . import errors
from .base import TEST_PROMPT, find_provider
from .errors import BAD_REQUEST, ProviderError, classify
from .params import alitellm_kwargs, endpoint_url, oauth_args

logger = logging.getLogger(__name__)

TEST_TIMEOUT_S = 20.0
LIST_TIMEOUT_S = 20.0
MAX_LIST_PAGES = 20
MAX_TEST_RESPONSE_BYTES = 1 << 20  # a one-token answer is a few hundred bytes
MAX_LIST_RESPONSE_BYTES = 16 << 20  # the largest public model lists are a few MB

@dataclass(frozen=True)
class ConnectionSettings:
    """What a call needs to know about a connection (secrets included: never log this)."""

    provider: str
    auth_method: str
    base_url: str | None = None
    config: dict = field(default_factory=dict)
    secrets: dict | None = field(default=None, repr=False)
    model: str = ""
    timeout: float | None = None  # the connection's timeout_seconds; None: the caller's default
    # "chat" | "embeddings": which API a test calls; "" = by the model's name (`endpoint_for`).
    endpoint: str = ""

    def __repr__(self) -> str:
        return (f"ConnectionSettings(provider={self.provider!r}, auth_method="
                f"{self.auth_method!r}, base_url={self.base_url!r}, model={self.model!r})")

    @property
    def host(self) -> str:
        url = endpoint_url(provider=self.provider, base_url=self.base_url, config=self.config)
        return (urlsplit(url).hostname or "") if url else ""


@dataclass
class TestOutcome:
    """The result of one connection test (no secrets, no upstream text)."""

    ok: bool
    latency_ms: int
    model: str = ""
    error_class: str = ""
    message: str = ""
    models: list[str] = field(default_factory=list)


async def _check_egress(url: str | None, host: str) -> None:
    if not url:
        return
    from .egress import check_url

    try:
        await asyncio.get_running_loop().run_in_executor(None, check_url, url)
    except Exception as exc:  # EgressBlocked, LookupError
        raise classify(exc, host=host) from None


async def _kwargs(s: ConnectionSettings, model: str) -> dict:
    return await alitellm_kwargs(provider=s.provider, auth_method=s.auth_method,
                                 base_url=s.base_url, config=s.config, secrets=s.secrets,
                                 model=model)


async def _with_oauth_retry(s: ConnectionSettings, call):
    """Run `call()`; after an auth failure with an OAuth token, drop the token and retry once."""
    try:
        return await call()
    except ProviderError as err:
        args = None
        if err.error_class == errors.AUTH:
            try:
                args = oauth_args(auth_method=s.auth_method, config=s.config, secrets=s.secrets)
            except ProviderError:
                args = None
        if not args:
            raise
        from asgiref.sync import sync_to_async

        from .oauth import invalidate

        await sync_to_async(invalidate, thread_sensitive=False)(**args)
        logger.info("Provider refused a cached OAuth token; fetching a new one")
        return await call()


def is_embedding_model(model: str) -> bool:
    """True for a model that makes embeddings, not chat: litellm's price table says so (mode
    "embedding"), or its name does ("embed": text-embedding-3-small, nomic-embed-text...)."""
    from .forward import model_mode

    return "embed" in model.lower() or model_mode(model) == "embedding"


def endpoint_for(s: ConnectionSettings, model: str) -> str:
    """The API a test of `s` calls: the one asked for, else embeddings for an embedding model."""
    if s.endpoint in ("chat", "embeddings"):
        return s.endpoint
    return "embeddings" if is_embedding_model(model) else "chat"


async def _read_capped(response, limit: int, host: str) -> bytes:
    """The response body, refusing more than `limit` bytes (an endless or huge answer)."""
    from .transport import ResponseTooLarge, read_httpx_body

    try:
        return await read_httpx_body(response, limit)
    except ResponseTooLarge:
        raise ProviderError(errors.PROVIDER_ERROR, f"{host or 'The provider'} sent more "
                            f"than {limit // 1024} KiB in one answer; stopped "
                            "reading. Is the base URL an LLM API?") from None


def _raise_for_status(response, host: str) -> None:
    # (a 3xx never gets here: providers.transport refuses it as `blocked`)
    response.raise_for_status()


async def _acall_direct(s: ConnectionSettings, request: tuple, ca_cert: str,
                        timeout: float) -> None:
    """The minimal test call (the provider's `test_request`) through the transport's httpx
    client."""
    from .transport import httpx_client

    url, headers, body, expect = request
    try:
        # One deadline for the whole call: a trickling answer cannot reset it read by read.
        async with asyncio.timeout(timeout), httpx_client(timeout=timeout,
                                                           ca_cert=ca_cert) as http:
            async with http.stream("POST", url, headers=headers, json=body) as response:
                _raise_for_status(response, s.host)
                raw = await _read_capped(response, MAX_TEST_RESPONSE_BYTES, s.host)
        data = json.loads(raw)
        if not isinstance(data, dict) or not isinstance(data.get(expect), list):
            raise ValueError("not an answer")
    except ProviderError:
        raise
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError):
            raise classify(exc, host=s.host) from None
        raise ProviderError(errors.PROVIDER_ERROR, f"{s.host or 'The provider'} answered with "
                            "something that is not a model's answer: is the base URL an LLM "
                            "API?") from None
    except Exception as exc:
        raise classify(exc, host=s.host) from None


async def _acall(s: ConnectionSettings, model: str, timeout: float) -> None:
    kwargs = await _kwargs(s, model)
    await _check_egress(kwargs.get("api_base") or endpoint_url(
        provider=s.provider, base_url=s.base_url, config=s.config), s.host)
    spec = find_provider(s.provider)
    for url in (spec.token_urls if spec is not None else ()):  # fetched inside litellm
        await _check_egress(url, s.host)
    if spec is not None and kwargs.get("api_base"):
        from .params import pop_ca_cert

        direct, ca_cert = pop_ca_cert(kwargs)
        request = spec.test_request(direct, model, endpoint_for(s, model))
        if request is not None:
            return await _acall_direct(s, request, ca_cert, timeout)
    from .forward import _litellm, _litellm_call
    from .transport import CA_CERT

    litellm = _litellm()
    kwargs, ca_cert = _litellm_call(kwargs)
    token = CA_CERT.set(ca_cert)
    try:
        # asyncio's own limit backs litellm's timeout up, in case a transport ignores it.
        async with asyncio.timeout(timeout + 5):
            if endpoint_for(s, model) == "embeddings":
                await litellm.aembedding(input=["ping"], timeout=timeout, num_retries=0,
                                         **kwargs)
            else:
                await litellm.acompletion(messages=TEST_PROMPT, max_tokens=1, num_retries=0,
                                          timeout=timeout, **kwargs)
    except ProviderError:
        raise
    except Exception as exc:
        raise classify(exc, host=s.host) from None
    finally:
        CA_CERT.reset(token)


async def atest_connection(s: ConnectionSettings, *, timeout: float = TEST_TIMEOUT_S) -> TestOutcome:
    """One minimal real call with these settings; never raises for provider failures."""
    model = s.model
    started = time.perf_counter()
    try:
        if model:
            await _with_oauth_retry(s, lambda: _acall(s, model, timeout))
            message = f"{model} answered."
            models = []
        else:
            models = await alist_models(s, timeout=timeout, live_only=True)
            message = f"Listed {len(models)} models (no model to call: set a default model)."
    except ProviderError as err:
        return TestOutcome(False, _ms(started), model, err.error_class, err.message)
    except Exception as exc:  # anything unexpected still ends as a classified failure
        err = classify(exc, host=s.host)
        return TestOutcome(False, _ms(started), model, err.error_class, err.message)
    return TestOutcome(True, _ms(started), model, "", message, models)


def _ms(started: float) -> int:
    return max(0, int((time.perf_counter() - started) * 1000))


def has_live_listing(provider: str) -> bool:
    """True when models can be listed from the provider itself."""
    spec = find_provider(provider)
    return bool(spec) and spec.has_live_listing()


def static_models(provider: str, default_model: str = "") -> list[str]:
    """The catalog's model list (plus the connection's default model)."""
    spec = find_provider(provider)
    found = list(spec.models) if spec else []
    if default_model and default_model not in found:
        found.append(default_model)
    return found


async def alist_models(s: ConnectionSettings, *, timeout: float = LIST_TIMEOUT_S,
                       live_only: bool = False) -> list[str]:
    """The models the provider offers: live where it can list them, else the catalog's list.

    Raises ProviderError when a live listing fails (never returns [] for a failure).
    """
    if not has_live_listing(s.provider):
        if live_only:
            raise ProviderError(BAD_REQUEST, "This provider cannot be tested without a model: "
                                "set the connection's default model.")
        return static_models(s.provider, s.model)
    return await _with_oauth_retry(s, lambda: _alist_live(s, timeout))


async def _alist_live(s: ConnectionSettings, timeout: float) -> list[str]:
    from .params import pop_ca_cert
    from .transport import httpx_client

    spec = find_provider(s.provider)
    kwargs, ca_cert = pop_ca_cert(await _kwargs(s, s.model or "list"))
    base = (kwargs.get("api_base") or endpoint_url(
        provider=s.provider, base_url=s.base_url, config=s.config) or "").rstrip("/")
    url, headers = spec.list_request(kwargs, base)
    await _check_egress(url, s.host)

    found: list[str] = []
    params: dict = {}
    try:
        async with asyncio.timeout(timeout + 5), httpx_client(timeout=timeout,
                                                               ca_cert=ca_cert) as client:
            for _ in range(MAX_LIST_PAGES):
                async with client.stream("GET", url, headers=headers, params=params) as response:
                    _raise_for_status(response, s.host)
                    raw = await _read_capped(response, MAX_LIST_RESPONSE_BYTES, s.host)
                data = json.loads(raw)
                if not isinstance(data, dict):
                    raise ValueError("listing is not an object")
                items, params = spec.parse_models(data)
                found.extend(i for i in items if isinstance(i, str) and i)
                if not params:
                    break
    except ProviderError:
        raise
    except (ValueError, AttributeError, TypeError):
        raise ProviderError(errors.PROVIDER_ERROR, f"{s.host or 'The provider'} answered the "
                            "models listing with something that is not a model list.") from None
    except Exception as exc:
        raise classify(exc, host=s.host, listing=True) from None
    return sorted(set(found))


def _run(coro):
    """Run a coroutine from sync code (Celery tasks, commands), even under a running loop."""
    from .transport import run_sync

    return run_sync(coro)


def test_connection(s: ConnectionSettings, *, timeout: float = TEST_TIMEOUT_S) -> TestOutcome:
    """Sync `atest_connection`."""
    return _run(atest_connection(s, timeout=timeout))


def list_models(s: ConnectionSettings, *, timeout: float = LIST_TIMEOUT_S) -> list[str]:
    """Sync `alist_models`."""
    return _run(alist_models(s, timeout=timeout))


async def atest_many(items, *, concurrency: int = 20, timeout: float = TEST_TIMEOUT_S,
                     on_result=None, deadline: float | None = None) -> dict:
    """Test many connections at once with bounded concurrency: {key: TestOutcome}.

    `items` is an iterable of (key, ConnectionSettings); `on_result(key, outcome)` is called as
    each finishes (progress bars). One event loop, one semaphore: hundreds of connections take
    about as long as the slowest few. After `deadline` seconds the tests still waiting or
    running are cancelled and reported as timed out, so a caller under a time limit always
    gets a complete answer.
    """
    items = list(items)
    semaphore = asyncio.Semaphore(max(1, concurrency))
    results: dict = {}
    started = time.perf_counter()

    async def one(key, s):
        async with semaphore:
            outcome = await atest_connection(s, timeout=s.timeout or timeout)
        results[key] = outcome
        if on_result:
            on_result(key, outcome)

    tasks = [asyncio.create_task(one(k, s)) for k, s in items]
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=deadline)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    for key, s in items:
        if key not in results:
            results[key] = TestOutcome(False, _ms(started), s.model, errors.TIMEOUT,
                                       "Not tested: the run reached its overall time limit.")
            if on_result:
                on_result(key, results[key])
    return results


def test_many(items, *, concurrency: int = 20, timeout: float = TEST_TIMEOUT_S,
              on_result=None, deadline: float | None = None) -> dict:
    """Sync `atest_many`."""
    return _run(atest_many(list(items), concurrency=concurrency, timeout=timeout,
                           on_result=on_result, deadline=deadline))


test_connection.__test__ = False  # not a pytest test, despite the name
atest_connection.__test__ = False
test_many.__test__ = False
atest_many.__test__ = False
