"""Secrets never reach a log record, whoever logs them."""

import logging

import pytest

from connections import services
from connections.models import Connection
from llmconn.redaction import REDACTED, redact, remember


def test_a_remembered_secret_is_redacted_from_any_text(canary):
    remember(canary)
    assert redact(f"upstream said: invalid key {canary}!") == f"upstream said: invalid key {REDACTED}!"


@pytest.mark.parametrize("text", [
    "Authorization: Bearer abcdefghijklmnop", "x-api-key: zyxwvutsrqponm",
    "api_key='sk-proj-abcdefghijklmnop'", "key lck_abcdefghijklmnopqrstu used",
])
def test_secret_shaped_tokens_are_redacted_even_if_unknown(text):
    assert REDACTED in redact(text)
    assert "abcdefghijklmnop" not in redact(text) and "zyxwvutsrqponm" not in redact(text)


@pytest.mark.django_db
def test_secret_decrypted_from_the_database_is_redacted_in_log_messages_args_and_tracebacks(
        canary, caplog):
    conn = services.connection_create(name="x", provider="openai_compatible", auth_method="api_key",
                                      base_url="http://127.0.0.1:9/v1",
                                      credentials={"api_key": canary.replace("sk-", "plain-")})
    secret = Connection.objects.get(pk=conn.pk).secrets["api_key"]
    logger = logging.getLogger("some.library")
    with caplog.at_level(logging.DEBUG):
        logger.debug("calling with %s", secret)
        try:
            raise RuntimeError(f"provider rejected {secret}")
        except RuntimeError:
            logger.exception("failed")
    text = caplog.text + "".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert secret not in text
    assert text.count(REDACTED) >= 2
