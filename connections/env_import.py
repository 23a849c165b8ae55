"""Import of legacy environment-variable configuration (OPENAI_API_KEY, ...) as connections
and system defaults. Idempotent: what already matches is left alone and reported as such.

Variables read:
- OpenAI: OPENAI_API_KEY, OPENAI_BASE_URL (or OPENAI_API_BASE), OPENAI_ORGANIZATION (or
  OPENAI_ORG_ID), OPENAI_MODEL
- Anthropic: ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL, ANTHROPIC_MODEL
- Azure OpenAI: AZURE_OPENAI_API_KEY, AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_VERSION (or
  OPENAI_API_VERSION), AZURE_OPENAI_DEPLOYMENT (or AZURE_OPENAI_DEPLOYMENT_NAME)
- Ollama: OLLAMA_BASE_URL (or OLLAMA_HOST), OLLAMA_MODEL
- OpenRouter: OPENROUTER_API_KEY, OPENROUTER_MODEL
- Defaults: LLM_PROVIDER + LLM_MODEL (chat), LLM_EMBEDDING_PROVIDER + LLM_EMBEDDING_MODEL (or
  EMBEDDING_MODEL) (embedding)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

from llmconn.errors import ApplicationError
from providers.base import EMBEDDINGS, find_provider

from .models import Connection
from .secrets import make_hint
from .services import connection_create, connection_update

# LLM_PROVIDER values people use, to our provider names.
PROVIDER_ALIASES = {
    "openai": "openai", "anthropic": "anthropic", "claude": "anthropic",
    "azure": "azure_openai", "azure_openai": "azure_openai", "azure-openai": "azure_openai",
    "ollama": "ollama", "openrouter": "openrouter",
}
# Preference when LLM_PROVIDER does not say which connection is the default.
ORDER = ("openai", "anthropic", "azure_openai", "openrouter", "ollama")
DEFAULT_EMBEDDING_MODEL = {"openai": "text-embedding-3-small"}


@dataclass
class Planned:
    """A connection the environment describes."""

    name: str
    provider: str
    auth_method: str
    base_url: str | None = None
    config: dict = field(default_factory=dict)
    credentials: dict = field(default_factory=dict)
    default_model: str = ""
    variables: tuple[str, ...] = ()

    def settings(self) -> dict:
        return {"provider": self.provider, "auth_method": self.auth_method,
                "base_url": self.base_url, "config": self.config,
                "default_model": self.default_model}


def _get(env: Mapping[str, str], *names: str) -> tuple[str, str]:
    for name in names:
        value = (env.get(name) or "").strip()
        if value:
            return name, value
    return "", ""


def _ollama_url(raw: str) -> str:
    url = raw if "://" in raw else f"http://{raw}"
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if not path.endswith("/v1"):
        path += "/v1"  # the OpenAI-compatible API (providers/catalog.py: Ollama)
    return f"{parts.scheme}://{parts.netloc}{path}"


def plan_from_env(env: Mapping[str, str]) -> tuple[list[Planned], list[str]]:
    """The connections the environment describes, and notes about variables not usable."""
    plans, notes = [], []
    model_for = {}
    chat_provider = PROVIDER_ALIASES.get((env.get("LLM_PROVIDER") or "").strip().lower(), "")
    llm_model = (env.get("LLM_MODEL") or "").strip()

    def model(provider: str, *names: str) -> str:
        _, value = _get(env, *names)
        if not value and provider == chat_provider:
            value = llm_model
        model_for[provider] = value
        return value

    var, key = _get(env, "OPENAI_API_KEY")
    if key:
        used = [var]
        p = Planned("openai-env", "openai", "api_key", credentials={"api_key": key},
                    default_model=model("openai", "OPENAI_MODEL"))
        bvar, base = _get(env, "OPENAI_BASE_URL", "OPENAI_API_BASE")
        if base:
            p.base_url = base
            used.append(bvar)
        ovar, org = _get(env, "OPENAI_ORGANIZATION", "OPENAI_ORG_ID")
        if org:
            p.config["organization"] = org
            used.append(ovar)
        p.variables = tuple(used)
        plans.append(p)

    var, key = _get(env, "ANTHROPIC_API_KEY")
    if key:
        p = Planned("anthropic-env", "anthropic", "api_key", credentials={"api_key": key},
                    default_model=model("anthropic", "ANTHROPIC_MODEL"), variables=(var,))
        bvar, base = _get(env, "ANTHROPIC_BASE_URL")
        if base:
            p.base_url = base
            p.variables += (bvar,)
        plans.append(p)

    var, key = _get(env, "AZURE_OPENAI_API_KEY")
    evar, endpoint = _get(env, "AZURE_OPENAI_ENDPOINT")
    if key and not endpoint:
        notes.append("AZURE_OPENAI_API_KEY is set but AZURE_OPENAI_ENDPOINT is not: Azure "
                     "OpenAI was not imported.")
    elif key:
        p = Planned("azure-openai-env", "azure_openai", "api_key", base_url=endpoint,
                    credentials={"api_key": key},
                    default_model=model("azure_openai", "AZURE_OPENAI_DEPLOYMENT",
                                        "AZURE_OPENAI_DEPLOYMENT_NAME"),
                    variables=(var, evar))
        vvar, version = _get(env, "AZURE_OPENAI_API_VERSION", "OPENAI_API_VERSION")
        if version:
            p.config["api_version"] = version
            p.variables += (vvar,)
        plans.append(p)

    var, base = _get(env, "OLLAMA_BASE_URL", "OLLAMA_HOST")
    if base:
        plans.append(Planned("ollama-env", "ollama", "none", base_url=_ollama_url(base),
                             default_model=model("ollama", "OLLAMA_MODEL"), variables=(var,)))

    var, key = _get(env, "OPENROUTER_API_KEY")
    if key:
        plans.append(Planned("openrouter-env", "openrouter", "api_key",
                             credentials={"api_key": key},
                             default_model=model("openrouter", "OPENROUTER_MODEL"),
                             variables=(var,)))
    if env.get("LLM_PROVIDER") and not chat_provider:
        notes.append(f"LLM_PROVIDER={env.get('LLM_PROVIDER')!r} is not one of "
                     f"{', '.join(sorted(PROVIDER_ALIASES))}: ignored.")
    return plans, notes


def _differences(conn: Connection, plan: Planned) -> list[str]:
    diffs = [k for k, v in plan.settings().items() if getattr(conn, k) != v]
    secrets = conn.secrets if conn.credentials_readable else {}
    diffs += [f"credentials.{k}" for k, v in plan.credentials.items() if (secrets or {}).get(k) != v]
    return diffs


def _describe(plan: Planned) -> str:
    creds = ", ".join(f"{k} …{make_hint(v)}" if make_hint(v) else k
                      for k, v in plan.credentials.items())
    model = f", model {plan.default_model}" if plan.default_model else ""
    return (f"{plan.provider}{', ' + creds if creds else ''}{model}; from "
            f"{', '.join(plan.variables)}")


def _error_text(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
    return getattr(exc, "message", str(exc))


def env_import(*, env: Mapping[str, str], update: bool = False, actor=None) -> tuple[list[str], bool, bool]:
    """Create or (with update) bring in line the connections and system defaults the
    environment describes. Returns (report lines, changed anything, every step succeeded)."""
    from workspaces.models import Role, SystemDefault
    from workspaces.services import system_default_set

    lines: list[str] = []
    changed, ok = False, True
    plans, notes = plan_from_env(env)
    lines += [f"note: {n}" for n in notes]
    if not plans:
        lines.append("No legacy variables found (OPENAI_API_KEY, ANTHROPIC_API_KEY, "
                     "AZURE_OPENAI_API_KEY, OLLAMA_BASE_URL, OPENROUTER_API_KEY): nothing to do.")
        return lines, False, not notes

    imported: dict[str, Connection] = {}
    for plan in plans:
        conn = Connection.objects.filter(name=plan.name).first()
        try:
            if conn is None:
                conn = connection_create(name=plan.name, credentials=plan.credentials, actor=actor,
                                         **plan.settings())
                lines.append(f"created connection {plan.name} ({_describe(plan)})")
                changed = True
            else:
                diffs = _differences(conn, plan)
                if not diffs:
                    lines.append(f"unchanged: connection {plan.name} already matches the environment")
                elif not update:
                    lines.append(f"left as is: connection {plan.name} differs from the environment "
                                 f"({', '.join(diffs)}); run with --update to apply")
                else:
                    creds = {k: v for k, v in plan.credentials.items() if f"credentials.{k}" in diffs}
                    conn = connection_update(connection=conn, credentials=creds, actor=actor,
                                             **plan.settings())
                    lines.append(f"updated connection {plan.name}: {', '.join(diffs)}")
                    changed = True
        except (ApplicationError, ValidationError) as exc:
            lines.append(f"error: connection {plan.name} not imported: {_error_text(exc)}")
            ok = False
            continue
        imported[plan.provider] = conn

    chat_provider = PROVIDER_ALIASES.get((env.get("LLM_PROVIDER") or "").strip().lower(), "")
    chat_conn = imported.get(chat_provider) or next(
        (imported[p] for p in ORDER if p in imported), None)
    emb_provider = PROVIDER_ALIASES.get(
        (env.get("LLM_EMBEDDING_PROVIDER") or "").strip().lower(), "")
    _, emb_model = _get(env, "LLM_EMBEDDING_MODEL", "EMBEDDING_MODEL")
    emb_conn = imported.get(emb_provider)
    if emb_conn is None:
        candidates = [chat_conn] + [imported[p] for p in ORDER if p in imported]
        emb_conn = next((c for c in candidates if c is not None and EMBEDDINGS in
                         (find_provider(c.provider).capabilities if c.spec else ())
                         and (emb_model or DEFAULT_EMBEDDING_MODEL.get(c.provider))), None)
    wanted = []
    if chat_conn is not None:
        wanted.append((Role.CHAT, chat_conn,
                       (env.get("LLM_MODEL") or "").strip() or chat_conn.default_model or None))
    if emb_conn is not None:
        wanted.append((Role.EMBEDDING, emb_conn,
                       emb_model or DEFAULT_EMBEDDING_MODEL.get(emb_conn.provider)))
    else:
        lines.append("no embedding default: set LLM_EMBEDDING_MODEL (and LLM_EMBEDDING_PROVIDER) "
                     "for a provider that offers embeddings")

    for role, conn, model in wanted:
        current = SystemDefault.objects.filter(role=role).select_related("connection").first()
        label = f"system default {role} -> {conn.name}{' / ' + model if model else ''}"
        if current is not None and current.connection_id == conn.pk and (current.model or None) == model:
            lines.append(f"unchanged: {label}")
            continue
        if current is not None and not update:
            lines.append(f"left as is: system default {role} is {current.connection.name}"
                         f"{' / ' + current.model if current.model else ''}; run with --update "
                         f"to set {conn.name}{' / ' + model if model else ''}")
            continue
        try:
            system_default_set(role=role, connection=conn, model=model, actor=actor)
        except (ApplicationError, ValidationError) as exc:
            lines.append(f"error: {label} not set: {_error_text(exc)}")
            ok = False
            continue
        lines.append(f"{'set' if current is None else 'updated'} {label}")
        changed = True
    return lines, changed, ok
