"""Import of legacy environment-variable configuration (OPENAI_API_KEY, ...) as connections
and system defaults. Idempotent: what already matches is left alone and reported as such.
This module creates the connections and says which system defaults the environment asks for;
the workspaces app, which owns system defaults, sets them (workspaces.env_defaults, run by
manage.py import_env_connections).

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
- AnythingLLM's names: OPEN_AI_KEY + OPEN_MODEL_PREF, ANTHROPIC_MODEL_PREF, AZURE_OPENAI_KEY,
  OLLAMA_BASE_PATH + OLLAMA_MODEL_PREF, LMSTUDIO_BASE_PATH + LMSTUDIO_MODEL_PREF,
  LITE_LLM_BASE_PATH + LITE_LLM_API_KEY + LITE_LLM_MODEL_PREF, GENERIC_OPEN_AI_BASE_PATH +
  GENERIC_OPEN_AI_API_KEY + GENERIC_OPEN_AI_MODEL_PREF, OPENROUTER_MODEL_PREF, GROQ_API_KEY +
  GROQ_MODEL_PREF, GEMINI_API_KEY + GEMINI_LLM_MODEL_PREF, MISTRAL_API_KEY + MISTRAL_MODEL_PREF,
  LLM_PROVIDER values (azure, lmstudio, litellm, generic-openai, ...), EMBEDDING_ENGINE +
  EMBEDDING_MODEL_PREF (embedding)
- OpenHands' names (when LLM_PROVIDER is not set): LLM_MODEL as litellm writes it
  (`anthropic/claude-sonnet-4-5`, `openai/gpt-4o`, bare `gpt-4o`), LLM_API_KEY, LLM_BASE_URL:
  one connection `openhands-env` and the chat default. The mapping is in docs/people.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

from llmconn.errors import ApplicationError, error_text
from providers.base import EMBEDDINGS, find_provider

from .models import Connection
from .secrets import make_hint
from .services import connection_create, connection_update

# LLM_PROVIDER values people use, to our provider names.
PROVIDER_ALIASES = {
    "openai": "openai", "anthropic": "anthropic", "claude": "anthropic",
    "azure": "azure_openai", "azure_openai": "azure_openai", "azure-openai": "azure_openai",
    "ollama": "ollama", "openrouter": "openrouter",
    # AnythingLLM's LLM_PROVIDER / EMBEDDING_ENGINE values
    "lmstudio": "lmstudio", "litellm": "litellm_proxy", "generic-openai": "openai_compatible",
    "groq": "groq", "gemini": "gemini", "mistral": "mistral",
}
# Preference when LLM_PROVIDER does not say which connection is the default.
ORDER = ("openai", "anthropic", "azure_openai", "openrouter", "ollama", "lmstudio",
         "litellm_proxy", "openai_compatible", "groq", "gemini", "mistral")
# litellm's model prefixes (OpenHands' LLM_MODEL, per-user llm_model) to our providers.
LITELLM_PREFIXES = {
    "openai": "openai", "anthropic": "anthropic", "azure": "azure_openai",
    "ollama": "ollama", "ollama_chat": "ollama", "openrouter": "openrouter",
    "litellm_proxy": "litellm_proxy", "gemini": "gemini", "groq": "groq",
    "mistral": "mistral", "deepseek": "deepseek", "together_ai": "together_ai",
    "hosted_vllm": "vllm", "lm_studio": "lmstudio",
}


def _litellm_prefixes() -> dict[str, str]:
    """LITELLM_PREFIXES plus every OpenAI-wire catalog provider with a litellm prefix of its
    own (xai/ → xai; a key and a model are all it needs): a provider added to the catalog is
    recognised without an edit here."""
    from providers.base import OpenAIWireProvider, all_providers

    owners: dict[str, set[str]] = {}
    for spec in all_providers():
        if issubclass(spec, OpenAIWireProvider):
            owners.setdefault(spec.litellm_prefix, set()).add(spec.name)
    own = {prefix: names.pop() for prefix, names in owners.items() if len(names) == 1}
    return {**own, **LITELLM_PREFIXES}


def split_litellm_model(value: str, *, base_url: str | None = None) -> tuple[str, str]:
    """(our provider, model) of a litellm-style model string: `anthropic/claude-x` →
    (anthropic, claude-x); a bare name is OpenAI's (Anthropic's for `claude*`); `openai/...`
    with a base URL is an OpenAI-compatible server. Unknown prefixes stay part of the model
    of an OpenAI-compatible connection when a base URL is given, else ("", value)."""
    value = (value or "").strip()
    prefix, sep, rest = value.partition("/")
    prefixes = _litellm_prefixes()
    if sep and prefix in prefixes:
        if prefix == "openai" and base_url:  # litellm's openai/ prefix, a server of one's own
            return "openai_compatible", rest
        return prefixes[prefix], rest
    if base_url:
        return "openai_compatible", value
    if not sep:
        return ("anthropic" if value.startswith("claude") else "openai"), value
    return "", value
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


# How a base URL variable of another tool becomes ours, by the provider it is read for (the
# /v1 of Ollama's and LM Studio's OpenAI-compatible API); the others are taken as they are.
ENV_BASE_URL_FIX = {"lmstudio": _ollama_url}
OPENHANDS_BASE_URL_FIX = {"ollama": _ollama_url}


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

    var, key = _get(env, "OPENAI_API_KEY", "OPEN_AI_KEY")
    if key:
        used = [var]
        p = Planned("openai-env", "openai", "api_key", credentials={"api_key": key},
                    default_model=model("openai", "OPENAI_MODEL", *(
                        ("OPEN_MODEL_PREF",) if chat_provider != "azure_openai" else ())))
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
                    default_model=model("anthropic", "ANTHROPIC_MODEL",
                                        "ANTHROPIC_MODEL_PREF"), variables=(var,))
        bvar, base = _get(env, "ANTHROPIC_BASE_URL")
        if base:
            p.base_url = base
            p.variables += (bvar,)
        plans.append(p)

    var, key = _get(env, "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_KEY")
    evar, endpoint = _get(env, "AZURE_OPENAI_ENDPOINT")
    if key and not endpoint:
        notes.append("AZURE_OPENAI_API_KEY is set but AZURE_OPENAI_ENDPOINT is not: Azure "
                     "OpenAI was not imported.")
    elif key:
        p = Planned("azure-openai-env", "azure_openai", "api_key", base_url=endpoint,
                    credentials={"api_key": key},
                    default_model=model("azure_openai", "AZURE_OPENAI_DEPLOYMENT",
                                        "AZURE_OPENAI_DEPLOYMENT_NAME", *(
                                            ("OPEN_MODEL_PREF",)
                                            if chat_provider == "azure_openai" else ())),
                    variables=(var, evar))
        vvar, version = _get(env, "AZURE_OPENAI_API_VERSION", "OPENAI_API_VERSION")
        if version:
            p.config["api_version"] = version
            p.variables += (vvar,)
        plans.append(p)

    var, base = _get(env, "OLLAMA_BASE_URL", "OLLAMA_HOST", "OLLAMA_BASE_PATH")
    if base:
        plans.append(Planned("ollama-env", "ollama", "none", base_url=_ollama_url(base),
                             default_model=model("ollama", "OLLAMA_MODEL", "OLLAMA_MODEL_PREF"),
                             variables=(var,)))

    var, key = _get(env, "OPENROUTER_API_KEY")
    if key:
        plans.append(Planned("openrouter-env", "openrouter", "api_key",
                             credentials={"api_key": key},
                             default_model=model("openrouter", "OPENROUTER_MODEL",
                                                 "OPENROUTER_MODEL_PREF"),
                             variables=(var,)))

    # AnythingLLM's other providers: (name, provider, base var, key var, model var).
    for name, provider, base_var, key_var, model_var in (
            ("lmstudio-env", "lmstudio", "LMSTUDIO_BASE_PATH", "", "LMSTUDIO_MODEL_PREF"),
            ("litellm-env", "litellm_proxy", "LITE_LLM_BASE_PATH", "LITE_LLM_API_KEY",
             "LITE_LLM_MODEL_PREF"),
            ("generic-openai-env", "openai_compatible", "GENERIC_OPEN_AI_BASE_PATH",
             "GENERIC_OPEN_AI_API_KEY", "GENERIC_OPEN_AI_MODEL_PREF"),
            ("groq-env", "groq", "", "GROQ_API_KEY", "GROQ_MODEL_PREF"),
            ("gemini-env", "gemini", "", "GEMINI_API_KEY", "GEMINI_LLM_MODEL_PREF"),
            ("mistral-env", "mistral", "", "MISTRAL_API_KEY", "MISTRAL_MODEL_PREF")):
        bvar, base = _get(env, base_var) if base_var else ("", "")
        kvar, key = _get(env, key_var) if key_var else ("", "")
        if not (base if base_var else key):
            continue
        base = ENV_BASE_URL_FIX.get(provider, str)(base)
        plans.append(Planned(name, provider, "api_key" if key else "none",
                             base_url=base or None,
                             credentials={"api_key": key} if key else {},
                             default_model=model(provider, model_var),
                             variables=tuple(v for v in (bvar, kvar) if v)))

    if not chat_provider and not env.get("LLM_PROVIDER"):
        plan = _openhands_plan(env)
        if plan is not None:
            plans.append(plan)
    if env.get("LLM_PROVIDER") and not chat_provider:
        notes.append(f"LLM_PROVIDER={env.get('LLM_PROVIDER')!r} is not one of "
                     f"{', '.join(sorted(PROVIDER_ALIASES))}: ignored.")
    return plans, notes


def _openhands_plan(env: Mapping[str, str]) -> Planned | None:
    """OpenHands' LLM_MODEL / LLM_API_KEY / LLM_BASE_URL as one connection (or None)."""
    _, model = _get(env, "LLM_MODEL")
    kvar, key = _get(env, "LLM_API_KEY")
    bvar, base = _get(env, "LLM_BASE_URL")
    if not (key or base or "/" in model):
        return None
    provider, bare = split_litellm_model(model, base_url=base or None)
    if not provider:
        provider = "openai_compatible" if base else "openai"
    if base:
        base = OPENHANDS_BASE_URL_FIX.get(provider, str)(base)
    auth = "api_key" if key else "none"
    spec = find_provider(provider)
    if spec is not None and auth not in {m.name for m in spec.auth_methods}:
        auth = spec.auth_methods[0].name
    used = tuple(v for v in ("LLM_MODEL" if model else "", kvar, bvar) if v)
    return Planned("openhands-env", provider, auth, base_url=base or None,
                   credentials={"api_key": key} if key else {}, default_model=bare,
                   variables=used)


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


@dataclass
class EnvImport:
    """What env_connections_import did: report lines, whether it changed anything, whether
    every step succeeded, and the system defaults the environment asks for, as (role,
    connection, model), for the workspaces app to set."""

    lines: list[str]
    changed: bool
    ok: bool
    defaults: list[tuple[str, Connection, str | None]] = field(default_factory=list)


def env_connections_import(*, env: Mapping[str, str], update: bool = False,
                           actor=None) -> EnvImport:
    """Create or (with update) bring in line the connections the environment describes, and
    name the system defaults it asks for (roles "chat" and "embedding")."""
    lines: list[str] = []
    changed, ok = False, True
    plans, notes = plan_from_env(env)
    lines += [f"note: {n}" for n in notes]
    if not plans:
        lines.append("No legacy variables found (OPENAI_API_KEY, ANTHROPIC_API_KEY, "
                     "AZURE_OPENAI_API_KEY, OLLAMA_BASE_URL, OPENROUTER_API_KEY, AnythingLLM's "
                     "or OpenHands' names; see docs/people.md): nothing to do.")
        return EnvImport(lines, False, not notes)

    imported: dict[str, Connection] = {}
    for plan in plans:
        conn = Connection.objects.filter(name=plan.name, owner__isnull=True).first()
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
            lines.append(f"error: connection {plan.name} not imported: {error_text(exc)}")
            ok = False
            continue
        imported["openhands-env" if plan.name == "openhands-env" else plan.provider] = conn

    chat_provider = PROVIDER_ALIASES.get((env.get("LLM_PROVIDER") or "").strip().lower(), "")
    chat_conn = imported.get(chat_provider) or next(
        (imported[p] for p in ORDER if p in imported), None)
    emb_provider = PROVIDER_ALIASES.get(
        (env.get("LLM_EMBEDDING_PROVIDER") or env.get("EMBEDDING_ENGINE") or "")
        .strip().lower(), "")
    _, emb_model = _get(env, "LLM_EMBEDDING_MODEL", "EMBEDDING_MODEL", "EMBEDDING_MODEL_PREF")
    emb_conn = imported.get(emb_provider)
    if emb_conn is None:
        candidates = [chat_conn] + [imported[p] for p in ORDER if p in imported]
        emb_conn = next((c for c in candidates if c is not None and EMBEDDINGS in
                         (find_provider(c.provider).capabilities if c.spec else ())
                         and (emb_model or DEFAULT_EMBEDDING_MODEL.get(c.provider))), None)
    openhands = imported.get("openhands-env")
    if openhands is not None and not env.get("LLM_PROVIDER"):
        chat_conn = openhands
    wanted = []
    if chat_conn is not None:
        chat_model = chat_conn.default_model if chat_conn is openhands else (
            (env.get("LLM_MODEL") or "").strip() or chat_conn.default_model)
        wanted.append(("chat", chat_conn, chat_model or None))
    if emb_conn is not None:
        wanted.append(("embedding", emb_conn,
                       emb_model or DEFAULT_EMBEDDING_MODEL.get(emb_conn.provider)))
    else:
        lines.append("no embedding default: set LLM_EMBEDDING_MODEL (and LLM_EMBEDDING_PROVIDER) "
                     "for a provider that offers embeddings")

    return EnvImport(lines, changed, ok, wanted)
