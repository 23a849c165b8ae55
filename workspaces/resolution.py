"""Resolution: (workspace, role) → the provider, model, endpoint and credentials to call.

Every process keeps what it resolved in memory, keyed by (workspace id, role), together with
the scopes it depends on and their versions (llmconn/versions.py): the workspace, the role's
system default when it resolved through it, every connection it names (its own and the
binding's fallbacks) and the global stamp. A service that changes one of those bumps that scope
only; a call reads the versions of the scopes its entries depend on (one MGET, no database
query) and re-resolves only an entry whose versions moved, so an edit takes effect on the next
call in every process without a restart, an unrelated edit leaves the entry in place, and a
call already running keeps the `Resolved` object it started with (they are immutable).

If the cache is unreachable the versions are unknown and every call resolves from the
database: slower, never stale. A cached entry is also refreshed after a maximum age
(constants.RESOLUTION_MAX_AGE_SECONDS, SHARED_RESOLUTION_MAX_AGE_SECONDS with Redis) in case a
change could not be announced or the cache is not shared between processes.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import router
from django.db.models import Subquery

from llmconn import versions
from llmconn.errors import ApplicationError
from llmconn.prepared import Prepared
from llmconn.versions import Versions

from .constants import MAX_CACHED_RESOLUTIONS, cache_max_age
from .models import Role, SystemDefault, UserDefault, Workspace, WorkspaceBinding

logger = logging.getLogger(__name__)


ROLES = tuple(Role.values)


def personal_scope(user_id: int) -> int:
    """The scope id under which a user's personal API keys resolve: minus the user id.

    Resolution is keyed by (scope id, role); workspace ids are positive, so a user's personal
    scope never meets a workspace's (and resolves only the user's defaults and the system's,
    never a workspace binding). Its cache scope is versions.workspace(personal_scope(user)):
    a change of the user's defaults bumps it."""
    return -int(user_id)


class ResolutionError(ApplicationError):
    """A workspace role that cannot be called now (nothing bound, connection inactive...)."""

    status_code = 503
    code = "role_not_configured"


# --- versions -------------------------------------------------------------------------------

# Read by every call before anything else: the stamp every entry depends on, the epoch (see
# _store) and the budgets' version.
BASE_SCOPES = (versions.GLOBAL, versions.EPOCH, versions.BUDGETS)  # every call reads these


def current_revision(*extra: str, known: dict | None = None) -> Versions | None:
    """The versions a call starts with: one MGET of the base scopes and `extra` (none created
    when missing, see versions.read; a missing base scope, after a cache flush, is created in a
    second round trip); None when the cache cannot be read (then nothing is cached).
    `known`: versions this call read already, before any query (the gateway's WarmCheck):
    only the scopes not among them are read."""
    found = Versions(known)
    found.fetch([*BASE_SCOPES, *extra], create=False)
    if found.ok and any(found.values.get(s) is None for s in BASE_SCOPES):
        found.fetch(BASE_SCOPES)
    return found if found.ok else None


def bump_revision() -> None:
    """Mark every cached resolution and API key stale, in every process (the global stamp).

    For changes that may alter what any workspace resolves; a change of one workspace,
    connection, key or default bumps only its own scope (llmconn.versions.bump).
    """
    versions.bump(versions.GLOBAL)


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


# --- what every workspace using a connection shares -------------------------------------------

@dataclass(frozen=True)
class _Shared:
    """What a resolution takes from its connection beyond the row's plain fields, built once per
    connection state in each process and shared by every workspace resolving to it: the
    decrypted secrets (decryption costs more than the query), the effective config and base
    URL, and the models offered (catalog + default + discovered)."""

    readable: bool
    secrets: dict = field(repr=False)
    config: dict = field(repr=False)
    base_url: str | None = None
    offered: frozenset[str] = frozenset()


# connection id → ((revision, updated_at), _Shared)
_SHARED: dict[str, tuple[tuple, _Shared]] = {}
_SECRET_FIELDS = ("secrets", "pending_secrets", "previous_secrets")


def _with_state(qs, prefix: str = ""):
    """`qs` (of connections, or of rows whose `prefix` relation is one) without the encrypted
    fields: they are decrypted once per connection state (_shared), not per row."""
    return qs.defer(*[f"{prefix}{f}" for f in _SECRET_FIELDS])


def _shared(connection, state: tuple) -> _Shared:
    """The _Shared of a connection loaded by `_with_state` (two queries the first time this
    process sees the connection in this state, none after)."""
    key = str(connection.pk)
    hit = _SHARED.get(key)
    if hit is not None and hit[0] == state:
        return hit[1]
    from connections.fields import UnreadableSecrets
    from connections.models import Connection

    secrets = Connection.objects.filter(pk=connection.pk).values_list("secrets", flat=True).first()
    names = set(connection.discovered_models.values_list("model_id", flat=True))
    if connection.default_model:
        names.add(connection.default_model)
    spec = connection.spec
    if spec is not None:
        names.update(spec.models)
    readable = not isinstance(secrets, UnreadableSecrets)
    shared = _Shared(readable=readable, secrets=dict(secrets or {}) if readable else {},
                     config=dict(connection.effective_config),
                     base_url=connection.effective_base_url, offered=frozenset(names))
    with _LOCK:
        if len(_SHARED) >= MAX_CACHED_RESOLUTIONS:
            _SHARED.clear()
        _SHARED[key] = (state, shared)
    return shared


def _state_of(connection) -> tuple:
    """What tells a connection's states apart: `revision` grows with every settings change,
    `updated_at` also moves when a discovery changes its models (connections.diagnostics)."""
    return (connection.revision, connection.updated_at)


def _offered(shared: _Shared, model: str | None) -> frozenset[str]:
    # The connection's set itself (shared by every workspace) unless the model is not in it.
    if not model or model in shared.offered:
        return shared.offered
    return shared.offered | {model}


@dataclass(frozen=True)
class _Row:
    """A binding or system default as resolve_uncached reads it (one prepared query)."""

    workspace: Workspace | None
    connection_id: object
    connection: object
    model: str | None
    fallbacks: list
    workspace_slug: str | None = None
    workspace_name: str = ""
    provider: str = ""  # a provider-string binding: that provider's default connection
    default_params: dict | None = None


@functools.cache
def _connection_fields() -> tuple[str, ...]:
    """The connection columns a resolution reads: all but the encrypted ones (see _shared)."""
    from connections.models import Connection

    return tuple(f.attname for f in Connection._meta.concrete_fields
                 if f.name not in _SECRET_FIELDS)


def _connection_from(values: tuple):
    from connections.models import Connection

    if values[0] is None:
        return None
    return Connection.from_db(router.db_for_read(Connection), _connection_fields(), values)


_BINDING = Prepared(
    WorkspaceBinding,
    lambda workspace_id, role: WorkspaceBinding.objects.filter(
        workspace_id=workspace_id, role=role).values_list(
        "workspace_id", "workspace__slug", "workspace__name", "model", "fallbacks", "provider",
        "default_params", *[f"connection__{f}" for f in _connection_fields()]),
    workspace_id=-987_654_321, role="\x01role")
_DEFAULT = Prepared(
    SystemDefault,
    lambda workspace_id, role: SystemDefault.objects.filter(role=role).annotate(
        workspace_slug=Subquery(Workspace.objects.filter(pk=workspace_id).values("slug")[:1]),
        workspace_name=Subquery(Workspace.objects.filter(pk=workspace_id).values("name")[:1]),
    ).values_list("workspace_slug", "workspace_name", "model",
                  *[f"connection__{f}" for f in _connection_fields()]),
    workspace_id=-987_654_321, role="\x01role")


def _binding_row(workspace_id: int, role: str) -> _Row | None:
    rows = _BINDING.rows(workspace_id=workspace_id, role=role)
    if not rows:
        return None
    ws_id, slug, name, model, fallbacks, provider, params, *conn = rows[0]
    connection = _connection_from(tuple(conn))
    return _Row(workspace=Workspace(id=ws_id, slug=slug, name=name),
                connection_id=connection.pk if connection is not None else None,
                connection=connection, model=model, fallbacks=fallbacks, provider=provider or "",
                default_params=params)


def _default_row(role: str, workspace_id: int) -> _Row | None:
    rows = _DEFAULT.rows(workspace_id=workspace_id, role=role)
    if not rows:
        return None
    slug, name, model, *conn = rows[0]
    connection = _connection_from(tuple(conn))
    return _Row(workspace=None, connection_id=connection.pk, connection=connection,
                model=model, fallbacks=[], workspace_slug=slug, workspace_name=name or "")


def resolve_uncached(*, workspace_id: int, role: str) -> Resolved:
    """Resolve from the database (ResolutionError when the role cannot be called).

    Order for a workspace: the binding's connection; else the default connection of the
    binding's provider (a provider-string binding); else the system default. For a personal
    scope (negative id, personal_scope): the user's default, else the system default.

    One query for a bound role (binding, workspace and connection together), two through the
    system default (binding, then default and workspace), a provider's default or with
    fallbacks; the connection's secrets and models come from _Shared (two more queries the
    first time a process meets a connection state)."""
    if role not in ROLES:
        raise ResolutionError(f"Unknown role {role!r}: use one of {', '.join(ROLES)}.",
                              code="unknown_role")
    if workspace_id < 0:
        return _resolve_personal(user_id=-workspace_id, role=role)
    binding = _binding_row(workspace_id, role)
    workspace = binding.workspace if binding is not None else None
    connection, model, source = None, None, "binding"
    if binding is not None and binding.connection_id:
        connection = binding.connection
        model = binding.model or connection.default_model
    elif binding is not None and binding.provider:
        from connections.models import Connection

        connection = _with_state(Connection.objects.filter(
            provider=binding.provider, is_default=True, owner__isnull=True)).first()
        if connection is None:
            raise ResolutionError(
                f"Workspace {workspace.slug!r} binds role {role!r} to provider "
                f"{binding.provider!r}, which has no default connection: an admin must mark "
                "one with set-default.", code="provider_default_missing")
        source = "provider_default"
        model = binding.model or connection.default_model
    else:
        # The default, with the workspace's slug (when the workspace was not read with a
        # binding): one query either way.
        default = _default_row(role, workspace_id)
        if workspace is None and default is not None and default.workspace_slug is not None:
            workspace = Workspace(id=workspace_id, slug=default.workspace_slug,
                                  name=default.workspace_name)
        if workspace is None:
            workspace = Workspace.objects.filter(pk=workspace_id).only(
                "id", "slug", "name").first()
        if workspace is None:
            raise ResolutionError("The workspace no longer exists.", code="workspace_not_found")
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
    """A personal key's call: the user's default for the role, else the system default.

    Cached under versions.workspace(personal_scope(user_id)), which the user's default
    services bump; through the system default it depends on that role's default too."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        raise ResolutionError("The key's user no longer exists or is inactive.",
                              code="user_inactive")
    scope = _PersonalScope(id=personal_scope(user_id), slug=f"~{user.get_username()}")
    default = _with_state(UserDefault.objects.select_related("connection"), "connection__"
                          ).filter(user_id=user_id, role=role).first()
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
        system = _with_state(SystemDefault.objects.select_related("connection"), "connection__"
                             ).filter(role=role).first()
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
    shared = _shared(connection, _state_of(connection))
    if not shared.readable:
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
        base_url=shared.base_url,
        model=model,
        offered_models=_offered(shared, model),
        config=shared.config,
        secrets=shared.secrets,
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
    found = {str(c.pk): c for c in _with_state(Connection.objects.filter(
        pk__in=ids, owner__isnull=True))}
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


# (workspace id, role) → (((scope, version), ...), resolved at (monotonic),
#                         Resolved or ResolutionError)
_LOCAL: dict[tuple[int, str], tuple[tuple, float, object]] = {}
_LOCK = threading.Lock()


def dependencies(workspace_id: int, role: str, value) -> list[str]:
    """The scopes a resolution depends on: what must be bumped for it to be made again.

    The global stamp and the workspace always; the role's system default when the role did not
    resolve through its own binding; every connection it names (its own and all the binding's
    fallbacks, callable or not: reactivating a skipped one must bring it back). A personal
    key's scope is its workspace here (personal_scope), which its user's default services
    bump. An error may come from anything (an inactive connection, a missing default...), so
    it depends on the epoch: any change retries it.
    """
    scopes = [versions.GLOBAL, versions.workspace(workspace_id)]
    if isinstance(value, ResolutionError):
        return scopes + [versions.default(role), versions.EPOCH]
    if value.source != "binding":
        scopes.append(versions.default(role))
    scopes.append(versions.connection(value.connection_id))
    for item in value.fallbacks:
        if isinstance(item, dict) and item.get("connection"):
            scopes.append(versions.connection(item["connection"]))
    return list(dict.fromkeys(scopes))


def _store(key: tuple[int, str], revision: Versions, epoch, now: float, value) -> None:
    """Keep a resolution made under `revision`, if it is safe to (Versions.settle: the
    versions not read before the queries, typically the connections', are read now)."""
    deps = revision.settle(dependencies(key[0], key[1], value), epoch)
    if deps is None:
        return
    with _LOCK:
        if len(_LOCAL) >= MAX_CACHED_RESOLUTIONS:
            _LOCAL.clear()
        _LOCAL[key] = (deps, now, value)


def resolve(*, workspace_id: int, role: str, revision: Versions | None = None) -> Resolved:
    """Resolve a workspace role, from this process's memory while the versions of what it
    depends on have not moved.

    `revision`: the versions already read for this call (saves cache reads).
    """
    if revision is None:
        revision = current_revision()
    key = (workspace_id, role)
    now = time.monotonic()
    hit = _LOCAL.get(key)
    if (hit is not None and revision is not None and now - hit[1] < cache_max_age()
            and revision.current(hit[0])):
        value = hit[2]
    else:
        epoch = revision.get(versions.EPOCH) if revision is not None else None  # (see _store)
        try:
            value = resolve_uncached(workspace_id=workspace_id, role=role)
        except ResolutionError as exc:
            value = exc
        if revision is not None and revision.ok:
            _store(key, revision, epoch, now, value)
    if isinstance(value, ResolutionError):
        raise value
    return value  # type: ignore[return-value]


_MISS = object()


def _cached(workspace_id: int, role: str, revision: Versions, now: float):
    hit = _LOCAL.get((workspace_id, role))
    if hit is None or now - hit[1] >= cache_max_age() or not revision.current(hit[0]):
        return _MISS
    return hit[2]


def cached_scopes(workspace_id: int) -> list[str]:
    """The scopes the cached resolutions of a workspace depend on (what the gateway's warm
    path reads in its one round trip), with the global stamp and the budgets' version."""
    scopes = [versions.GLOBAL, versions.BUDGETS]
    for role in ROLES:
        hit = _LOCAL.get((workspace_id, role))
        if hit is not None:
            scopes.extend(s for s, _ in hit[0])
    return list(dict.fromkeys(scopes))


def resolve_model_cached(*, workspace_id: int, model: str, endpoint: str, revision: Versions
                         ) -> Resolved | None:
    """`resolve_model` from this process's memory only (no query, no cache read: the gateway's
    warm path runs it on the event loop, `revision` frozen); None when anything it needs is
    not cached under `revision`. Raises what `resolve_model` would raise for the same cached
    entries."""
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
                  revision: Versions | None = None) -> Resolved:
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


def workspace_models(*, workspace_id: int, revision: Versions | None = None) -> list[dict]:
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
    """Forget every resolution this process holds (tests)."""
    _LOCAL.clear()
    _SHARED.clear()
