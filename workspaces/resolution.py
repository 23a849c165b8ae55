"""Resolution: (workspace, role) → the provider, model, endpoint and credentials to call.

Every process keeps what it resolved in memory, keyed by (workspace id, role), together with
the revision stamp it was resolved under. The stamp is one integer in the shared cache
(`constants.REVISION_CACHE_KEY`); every service that changes a workspace, a binding, a system
default, an API key or a connection increments it (`bump_revision`). A call reads the stamp
(one cache GET, no database query) and re-resolves only when it moved, so an edit takes effect
on the next call in every process without a restart, while a call already running keeps the
`Resolved` object it started with (they are immutable).

If the cache is unreachable the stamp is unknown and every call resolves from the database:
slower, never stale. A cached entry is also refreshed after RESOLUTION_MAX_AGE_SECONDS in case
the cache was flushed or is not shared between processes (local-memory cache).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal

from django.core.cache import cache
from django.db import transaction

from llmconn.errors import ApplicationError

from .constants import MAX_CACHED_RESOLUTIONS, RESOLUTION_MAX_AGE_SECONDS, REVISION_CACHE_KEY
from .models import Role, SystemDefault, UserDefault, Workspace, WorkspaceBinding

logger = logging.getLogger(__name__)

ROLES = tuple(Role.values)


def personal_scope(user_id: int) -> int:
    """The scope id under which a user's personal API keys resolve: minus the user id.

    Resolution is keyed by (scope id, role); workspace ids are positive, so a user's personal
    scope never meets a workspace's (and resolves only the user's defaults and the system's,
    never a workspace binding)."""
    return -int(user_id)


class ResolutionError(ApplicationError):
    """A workspace role that cannot be called now (nothing bound, connection inactive...)."""

    status_code = 503
    code = "role_not_configured"


# --- the revision stamp --------------------------------------------------------------------

def _fresh_stamp() -> int:
    # A stamp that never repeats an earlier value even if the key was lost (cache flush):
    # microseconds since the epoch, then incremented.
    return time.time_ns() // 1000


def _read_stamp():
    # Read on every gateway call: straight from Redis with one client per process (see
    # llmconn/rediscache.py), through Django's cache otherwise.
    from llmconn.rediscache import client_and_key

    client, full = client_and_key(REVISION_CACHE_KEY)
    if client is None:
        return cache.get(REVISION_CACHE_KEY)
    raw = client.get(full)
    return None if raw is None else int(raw)


def current_revision() -> int | None:
    """The shared revision stamp; None when the cache cannot be read (then nothing is cached)."""
    try:
        value = _read_stamp()
        if value is None:
            cache.add(REVISION_CACHE_KEY, _fresh_stamp(), timeout=None)
            value = cache.get(REVISION_CACHE_KEY)
    except Exception:  # noqa: BLE001 - a cache outage must not stop calls
        logger.warning("Revision stamp unreadable (cache down?): resolving from the database.")
        return None
    return int(value) if value is not None else None


def _incr() -> None:
    try:
        try:
            cache.incr(REVISION_CACHE_KEY)
        except ValueError:  # no stamp yet (or it was evicted)
            if not cache.add(REVISION_CACHE_KEY, _fresh_stamp(), timeout=None):
                cache.incr(REVISION_CACHE_KEY)
    except Exception:  # noqa: BLE001
        logger.error("Could not bump the revision stamp (cache down?): other processes may use "
                     "a stale resolution for up to %ss.", RESOLUTION_MAX_AGE_SECONDS)
    _LOCAL.clear()


def bump_revision() -> None:
    """Mark every cached resolution and API key stale, in every process.

    Bumped now (this process and tests inside a transaction see it at once) and again when the
    surrounding transaction commits, so that no process can re-resolve between the first bump
    and the commit and keep the old rows under the new stamp.
    """
    _incr()
    transaction.on_commit(_incr)


# --- resolved calls -------------------------------------------------------------------------

@dataclass(frozen=True)
class Resolved:
    """Everything needed to call the model of one workspace role. Immutable; holds secrets."""

    workspace_id: int  # negative: a user's personal scope (personal_scope)
    workspace_slug: str
    role: str
    source: str  # "binding", "provider_default", "user_default", "system_default", "fallback"
    connection_id: str
    connection_name: str
    provider: str
    auth_method: str
    base_url: str | None
    model: str
    offered_models: frozenset[str]
    config: dict = field(default_factory=dict, repr=False)
    secrets: dict = field(default_factory=dict, repr=False)
    fallbacks: tuple = ()
    # Gateway settings of the connection: call timeout (None: LLMCONN_PROVIDER_TIMEOUT) and
    # price override per million tokens (None: litellm's price table).
    timeout: int | None = None
    input_cost_per_million: Decimal | None = None
    output_cost_per_million: Decimal | None = None
    # The binding's fallbacks that can be called, resolved like this one (source "fallback"),
    # in the order they are tried after this connection.
    fallback_chain: tuple = field(default=(), repr=False)
    workspace_name: str = ""
    # Request fields added to chat calls: the connection's, overridden by the binding's
    # (the request's own fields override both, at call time).
    default_params: dict = field(default_factory=dict)

    @property
    def user_id(self) -> int | None:
        """The user of a personal scope (None for a workspace)."""
        return -self.workspace_id if self.workspace_id < 0 else None

    def chat_params(self, params: dict) -> dict:
        """A chat call's parameters: default_params overridden by the request's."""
        if not self.default_params:
            return params
        return {**self.default_params, **params}

    @property
    def provider_label(self) -> str:
        from providers.base import find_provider

        spec = find_provider(self.provider)
        return spec.label if spec else self.provider

    @property
    def litellm_model(self) -> str:
        from providers.base import find_provider

        spec = find_provider(self.provider)
        return spec.model_string(self.model) if spec else self.model

    @property
    def endpoint(self) -> str | None:
        """The URL calls go to (what the egress policy checks); None if the provider has none."""
        from providers.params import endpoint_url

        return endpoint_url(provider=self.provider, base_url=self.base_url, config=self.config)

    @property
    def host(self) -> str:
        from providers.base import host_of

        return host_of(self.endpoint)

    def with_model(self, model: str) -> Resolved:
        """The same connection, another of its models."""
        return dataclasses.replace(self, model=model)

    @property
    def chain(self) -> tuple[Resolved, ...]:
        """This connection, then the fallbacks to try after it, in order."""
        return (self, *self.fallback_chain)

    @property
    def call_timeout(self) -> float:
        """Seconds a provider call may take before it is a timeout."""
        from django.conf import settings

        return float(self.timeout or settings.LLMCONN_PROVIDER_TIMEOUT)

    def call_kwargs(self) -> dict:
        """litellm keyword arguments (model string, api_base, key or headers) for this call.

        Fetches an OAuth token when the auth method needs one (cached by providers.oauth).
        """
        from providers.params import litellm_kwargs

        return litellm_kwargs(
            provider=self.provider, auth_method=self.auth_method, base_url=self.base_url,
            config=self.config, secrets=self.secrets, model=self.model,
        )

    async def acall_kwargs(self) -> dict:
        """`call_kwargs` for async code (an OAuth token is fetched without blocking)."""
        from providers.params import alitellm_kwargs

        return await alitellm_kwargs(
            provider=self.provider, auth_method=self.auth_method, base_url=self.base_url,
            config=self.config, secrets=self.secrets, model=self.model,
        )

    def summary(self) -> dict:
        """What the API may show: no config, no secret."""
        return {
            "role": self.role,
            "source": self.source,
            "provider": self.provider,
            "provider_label": self.provider_label,
            "connection": self.connection_id,
            "connection_name": self.connection_name,
            "model": self.model,
            "litellm_model": self.litellm_model,
            "default_params": dict(self.default_params),
            "fallbacks": [{"connection": f.connection_id, "connection_name": f.connection_name,
                           "provider": f.provider, "model": f.model,
                           "default_params": dict(f.default_params)}
                          for f in self.fallback_chain],
        }


def _offered(connection, *extra: str | None) -> frozenset[str]:
    names = {m for m in extra if m}
    if connection.default_model:
        names.add(connection.default_model)
    spec = connection.spec
    if spec is not None:
        names.update(spec.models)
    names.update(connection.discovered_models.values_list("model_id", flat=True))
    return frozenset(names)


def resolve_uncached(*, workspace_id: int, role: str) -> Resolved:
    """Resolve from the database (ResolutionError when the role cannot be called).

    Order for a workspace: the binding's connection; else the default connection of the
    binding's provider (a provider-string binding); else the system default. For a personal
    scope (negative id, personal_scope): the user's default, else the system default.
    """
    if role not in ROLES:
        raise ResolutionError(f"Unknown role {role!r}: use one of {', '.join(ROLES)}.",
                              code="unknown_role")
    if workspace_id < 0:
        return _resolve_personal(user_id=-workspace_id, role=role)
    workspace = Workspace.objects.filter(pk=workspace_id).only("id", "slug", "name").first()
    if workspace is None:
        raise ResolutionError("The workspace no longer exists.", code="workspace_not_found")
    binding = (WorkspaceBinding.objects.select_related("connection")
               .filter(workspace_id=workspace_id, role=role).first())
    connection, model, source = None, None, "binding"
    if binding is not None and binding.connection_id:
        connection = binding.connection
        model = binding.model or connection.default_model
    elif binding is not None and binding.provider:
        from connections.models import Connection

        connection = Connection.objects.filter(provider=binding.provider, is_default=True,
                                               owner__isnull=True).first()
        if connection is None:
            raise ResolutionError(
                f"Workspace {workspace.slug!r} binds role {role!r} to provider "
                f"{binding.provider!r}, which has no default connection: an admin must mark "
                "one with set-default.", code="provider_default_missing")
        source = "provider_default"
        model = binding.model or connection.default_model
    else:
        default = SystemDefault.objects.select_related("connection").filter(role=role).first()
        if default is None:
            raise ResolutionError(
                f"Workspace {workspace.slug!r} has no connection for role {role!r} and there is "
                "no system default for it: bind a connection or ask an admin to set a default.",
                code="role_not_configured",
            )
        connection, source = default.connection, "system_default"
        model = (binding.model if binding is not None and binding.model else None) \
            or default.model or connection.default_model
    if connection.owner_id is not None:  # never bound (services refuse it); never used either
        raise ResolutionError(f"Role {role!r} names a personal connection, which workspaces "
                              "cannot use.", code="personal_connection")
    fallbacks = tuple(binding.fallbacks or ()) if binding is not None else ()
    binding_params = dict(binding.default_params or {}) if binding is not None else {}
    primary = _resolved_connection(workspace=workspace, role=role, source=source,
                                   connection=connection, model=model,
                                   binding_params=binding_params)
    return dataclasses.replace(primary, fallbacks=fallbacks, fallback_chain=_fallback_chain(
        workspace=workspace, role=role, fallbacks=fallbacks, primary=primary,
        binding_params=binding_params))


@dataclass(frozen=True)
class _PersonalScope:
    """What _resolved_connection needs of a workspace, for a user's personal scope."""

    id: int
    slug: str
    name: str = ""


def _resolve_personal(*, user_id: int, role: str) -> Resolved:
    """A personal key's call: the user's default for the role, else the system default."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        raise ResolutionError("The key's user no longer exists or is inactive.",
                              code="user_inactive")
    scope = _PersonalScope(id=personal_scope(user_id), slug=f"~{user.get_username()}")
    default = UserDefault.objects.select_related("connection").filter(
        user_id=user_id, role=role).first()
    if default is not None:
        connection, source = default.connection, "user_default"
        model = default.model or connection.default_model
        if connection.owner_id is not None:
            from django.conf import settings

            if connection.owner_id != user_id:  # (services refuse it; never used either)
                raise ResolutionError("Your default names a connection you cannot use.",
                                      code="connection_not_yours")
            if not getattr(settings, "LLMCONN_PERSONAL_CONNECTIONS", True):
                raise ResolutionError(
                    f"Your default for role {role!r} is a personal connection and personal "
                    "connections are turned off on this server.",
                    code="personal_connections_disabled")
    else:
        system = SystemDefault.objects.select_related("connection").filter(role=role).first()
        if system is None:
            raise ResolutionError(
                f"You have no default for role {role!r} and there is no system default for it: "
                f"set one with PUT /api/v1/me/defaults/{role}/.", code="role_not_configured")
        connection, source = system.connection, "system_default"
        model = system.model or connection.default_model
    return _resolved_connection(workspace=scope, role=role, source=source,
                                connection=connection, model=model, binding_params={})


def _resolved_connection(*, workspace, role: str, source: str, connection,
                         model: str | None, binding_params: dict | None = None) -> Resolved:
    """A Resolved for one connection, or ResolutionError saying why it cannot be called."""
    if not connection.is_active:
        raise ResolutionError(
            f"Connection {connection.name!r} used by role {role!r} is inactive.",
            code="connection_inactive",
        )
    if not connection.credentials_readable:
        raise ResolutionError(
            f"The credentials of connection {connection.name!r} cannot be decrypted with the "
            "configured FERNET_KEYS: an admin must enter them again.",
            code="credentials_unreadable",
        )
    if connection.spec is None:
        raise ResolutionError(
            f"Connection {connection.name!r} names provider {connection.provider!r}, which is "
            "not in the catalog.", code="provider_unknown",
        )
    if not model:
        raise ResolutionError(
            f"No model for role {role!r}: connection {connection.name!r} has no default model "
            "and the binding names none.", code="model_not_configured",
        )
    return Resolved(
        workspace_id=workspace.id,
        workspace_slug=workspace.slug,
        role=role,
        source=source,
        connection_id=str(connection.id),
        connection_name=connection.name,
        provider=connection.provider,
        auth_method=connection.auth_method,
        base_url=connection.effective_base_url,
        model=model,
        offered_models=_offered(connection, model),
        config=dict(connection.effective_config),
        secrets=dict(connection.secrets or {}),
        timeout=connection.timeout_seconds,
        input_cost_per_million=connection.input_cost_per_million_tokens,
        output_cost_per_million=connection.output_cost_per_million_tokens,
        workspace_name=getattr(workspace, "name", "") or "",
        default_params={**(connection.default_params or {}), **(binding_params or {})},
    )


def _fallback_chain(*, workspace, role: str, fallbacks: tuple, primary: Resolved,
                    binding_params: dict | None = None) -> tuple[Resolved, ...]:
    """The fallbacks that can be called now, resolved (model null: the connection's default).

    One that cannot (deleted, inactive, unreadable, no model) is left out with a warning: a
    broken fallback must not stop the binding's own connection from answering.
    """
    from connections.models import Connection

    if not fallbacks:
        return ()
    ids = [str(item.get("connection")) for item in fallbacks if isinstance(item, dict)]
    found = {str(c.pk): c for c in Connection.objects.filter(pk__in=ids, owner__isnull=True)}
    chain: list[Resolved] = []
    seen = {(primary.connection_id, primary.model)}
    for item in fallbacks:
        if not isinstance(item, dict):
            continue
        connection = found.get(str(item.get("connection")))
        if connection is None:
            logger.warning("Workspace %s role %s: fallback connection %s no longer exists.",
                           workspace.slug, role, item.get("connection"))
            continue
        model = item.get("model") or connection.default_model
        try:
            resolved = _resolved_connection(workspace=workspace, role=role, source="fallback",
                                            connection=connection, model=model,
                                            binding_params=binding_params)
        except ResolutionError as exc:
            logger.warning("Workspace %s role %s: fallback skipped: %s", workspace.slug, role,
                           exc.message)
            continue
        if (resolved.connection_id, resolved.model) not in seen:
            seen.add((resolved.connection_id, resolved.model))
            chain.append(resolved)
    return tuple(chain)


# (workspace id, role) → (stamp, resolved at (monotonic), Resolved or ResolutionError)
_LOCAL: dict[tuple[int, str], tuple[int, float, object]] = {}
_LOCK = threading.Lock()


def resolve(*, workspace_id: int, role: str, revision: int | None = None) -> Resolved:
    """Resolve a workspace role, from this process's memory while the stamp has not moved.

    `revision`: the stamp already read for this call (saves a second cache read).
    """
    if revision is None:
        revision = current_revision()
    key = (workspace_id, role)
    now = time.monotonic()
    hit = _LOCAL.get(key)
    if (hit is not None and revision is not None and hit[0] == revision
            and now - hit[1] < RESOLUTION_MAX_AGE_SECONDS):
        value = hit[2]
    else:
        try:
            value = resolve_uncached(workspace_id=workspace_id, role=role)
        except ResolutionError as exc:
            value = exc
        if revision is not None:
            with _LOCK:
                if len(_LOCAL) >= MAX_CACHED_RESOLUTIONS:
                    _LOCAL.clear()
                _LOCAL[key] = (revision, now, value)
    if isinstance(value, ResolutionError):
        raise value
    return value  # type: ignore[return-value]


_MISS = object()


def _cached(workspace_id: int, role: str, revision: int, now: float):
    hit = _LOCAL.get((workspace_id, role))
    if hit is None or hit[0] != revision or now - hit[1] >= RESOLUTION_MAX_AGE_SECONDS:
        return _MISS
    return hit[2]


def resolve_model_cached(*, workspace_id: int, model: str, endpoint: str, revision: int
                         ) -> Resolved | None:
    """`resolve_model` from this process's memory only (no query, no cache read: the gateway's
    warm path runs it on the event loop); None when anything it needs is not cached under
    `revision`. Raises what `resolve_model` would raise for the same cached entries."""
    now = time.monotonic()
    if model in ROLES:
        value = _cached(workspace_id, model, revision, now)
        if value is _MISS:
            return None
        if isinstance(value, ResolutionError):
            raise value
        return value  # type: ignore[return-value]
    order = ("embedding", "chat", "agent") if endpoint == "embeddings" else \
        ("chat", "agent", "embedding")
    for role in order:
        value = _cached(workspace_id, role, revision, now)
        if value is _MISS:
            return None
        if isinstance(value, ResolutionError):
            continue
        if model == value.model:
            return value
        if model in value.offered_models:
            return value.with_model(model)
    raise ModelNotOffered(model)


def resolve_model(*, workspace_id: int, model: str, endpoint: str = "chat",
                  revision: int | None = None) -> Resolved:
    """Resolve the `model` of an OpenAI-style request: a role name or a model a bound connection
    offers (looked up in the roles that fit the endpoint first)."""
    if revision is None:
        revision = current_revision()
    if model in ROLES:
        return resolve(workspace_id=workspace_id, role=model, revision=revision)
    order = ("embedding", "chat", "agent") if endpoint == "embeddings" else \
        ("chat", "agent", "embedding")
    for role in order:
        try:
            resolved = resolve(workspace_id=workspace_id, role=role, revision=revision)
        except ResolutionError:
            continue
        if model == resolved.model:
            return resolved
        if model in resolved.offered_models:
            return resolved.with_model(model)
    raise ModelNotOffered(model)


class ModelNotOffered(ApplicationError):
    """A requested model that is neither a role name nor offered by a bound connection."""

    status_code = 404
    code = "model_not_found"

    def __init__(self, model: str):
        super().__init__(
            f"The model {model!r} does not exist in this workspace: use a role name "
            f"({', '.join(ROLES)}) or a model listed by GET /v1/models.")


def workspace_models(*, workspace_id: int, revision: int | None = None) -> list[dict]:
    """What GET /v1/models lists: the role names, then every model of the bound connections."""
    if revision is None:
        revision = current_revision()
    rows: list[dict] = []
    seen: set[str] = set()
    models_by_role: list[tuple[Resolved, list[str]]] = []
    for role in ROLES:
        try:
            resolved = resolve(workspace_id=workspace_id, role=role, revision=revision)
        except ResolutionError:
            continue
        rows.append({"id": role, "owned_by": resolved.connection_name,
                     "provider": resolved.provider, "connection_id": resolved.connection_id,
                     "model": resolved.model})
        seen.add(role)
        models_by_role.append((resolved, sorted(resolved.offered_models)))
    for resolved, names in models_by_role:
        for name in [resolved.model, *names]:
            if name not in seen:
                seen.add(name)
                rows.append({"id": name, "owned_by": resolved.connection_name,
                             "provider": resolved.provider,
                             "connection_id": resolved.connection_id, "model": name})
    return rows


def clear_local_cache() -> None:
    """Forget every resolution this process holds (tests, and after a bump)."""
    _LOCAL.clear()
