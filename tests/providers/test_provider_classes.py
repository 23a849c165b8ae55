"""A provider is one class: behaviour lives on the classes in providers/base.py and
providers/catalog.py, and no other module branches on a provider's name or wire format."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

from providers import errors, forward
from providers.base import OpenAIWireProvider, all_providers, find_provider
from tests.providers.branch_scan import ROOT, provider_branches


def test_the_scanner_finds_provider_and_wire_branches():
    source = ('if provider == "gemini": pass\n'
              'if s.provider != "openai": pass\n'
              'if spec.wire in (WIRE_OPENAI, WIRE_ANTHROPIC): pass\n'
              'if provider in ("ollama", "vllm"): pass\n'
              'if spec.wire == base.WIRE_OPENAI: pass\n'
              'if auth_method == "api_key": pass\n'
              'if chat_provider == provider: pass\n')
    assert provider_branches(source) == [1, 2, 3, 4, 5]


def test_no_provider_or_wire_branch_outside_the_provider_classes():
    """Adding a provider is adding one class: a `provider == "..."` branch elsewhere is a
    method missing on a class (STYLE.md, "Providers")."""
    run = subprocess.run([sys.executable, "-m", "tests.providers.branch_scan"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True)
    offenders = json.loads(run.stdout)
    assert offenders == [], ("branch on a provider's name or wire format outside "
                             "providers/base.py and providers/catalog.py: " + ", ".join(offenders))


def test_one_litellm_helper_turns_message_logging_off():
    litellm = forward._litellm()
    assert litellm.turn_off_message_logging is True
    assert litellm.telemetry is False


def test_every_openai_wire_provider_forwards_directly_and_no_other_does():
    call = {"model": "", "api_base": "http://127.0.0.1:9/v1", "api_key": "k"}
    for spec in all_providers():
        target = forward.direct_target({**call, "model": spec.model_string("m")})
        shares_prefix = {p.wire for p in all_providers() if p.litellm_prefix == spec.litellm_prefix}
        if issubclass(spec, OpenAIWireProvider) and shares_prefix == {spec.wire}:
            assert target == ("http://127.0.0.1:9/v1", "m", {"authorization": "Bearer k"}), spec
        else:
            assert target is None, spec


def test_live_listing_is_what_the_class_declares():
    listed = {p.name for p in all_providers() if p.has_live_listing()}
    assert {"openai", "anthropic", "gemini", "ollama", "openai_compatible"} <= listed
    assert not listed & {"azure_openai", "bedrock", "vertex_ai"}
    assert find_provider("bedrock").endpoint_url(
        base_url=None, config={"aws_region_name": "eu-west-1"}) == \
        "https://bedrock-runtime.eu-west-1.amazonaws.com"


def test_the_one_provider_error_keeps_its_gateway_answer_through_pickle():
    err = forward.classify(errors.ProviderError(errors.RATE_LIMITED, "slow down",
                                                upstream_status=429, retry_after="3"),
                           label="main")
    back = pickle.loads(pickle.dumps(err))
    assert (back.status, back.code, back.retry_after, back.label) == (
        429, "provider_rate_limited", "3", "main")
    assert back.message.startswith("Error from the provider (main): ")
    assert back.as_openai()["error"]["code"] == "provider_rate_limited"
    assert not errors.ProviderError(errors.AUTH, "x").should_retry
