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


def test_a_traceback_with_a_secret_is_logged_scrubbed_and_keeps_its_exception(canary, caplog):
    """Error trackers read `exc_info`: it stays, as a scrubbed copy of the same type with the
    same traceback (chained exception and notes too); the raiser's exception is untouched."""
    import traceback

    remember(canary)
    logger = logging.getLogger("some.library")
    with caplog.at_level(logging.ERROR):
        try:
            try:
                raise ValueError(f"inner {canary}")
            except ValueError as inner:
                outer = RuntimeError(f"provider rejected {canary}", 401)
                outer.add_note(f"sent {canary}")
                raise outer from inner
        except RuntimeError as exc:
            raised = exc
            logger.exception("call failed with %s", canary)
    record = caplog.records[-1]
    assert record.exc_info is not None
    exc_type, exc, tb = record.exc_info
    assert exc_type is RuntimeError and isinstance(exc, RuntimeError)
    assert exc.args == (f"provider rejected {REDACTED}", 401)
    assert tb is raised.__traceback__  # the frames, for the tracker
    assert isinstance(exc.__cause__, ValueError) and str(exc.__cause__) == f"inner {REDACTED}"
    printed = "".join(traceback.format_exception(*record.exc_info))
    assert canary not in printed and "test_redaction.py" in printed
    assert canary not in caplog.text and canary not in record.getMessage()
    assert canary not in (record.exc_text or "")
    assert "ValueError: inner [REDACTED]" in caplog.text  # the chain is printed, scrubbed
    assert canary in str(raised)  # the caller's exception is not rewritten


def test_an_exception_without_secrets_is_kept_as_it_is(caplog):
    with caplog.at_level(logging.ERROR):
        try:
            raise KeyError("plain")
        except KeyError as exc:
            raised = exc
            logging.getLogger("x").exception("boom")
    assert caplog.records[-1].exc_info[1] is raised


def test_thousands_of_secrets_are_all_matched_including_overlapping_ones():
    import secrets as random_secrets

    values = [f"tok{n:05d}-" + random_secrets.token_hex(8) for n in range(3000)]
    for value in values:  # (several merges of the recent automaton into the large one)
        remember(value)
    text = " | ".join(values[::97])
    assert redact(text) == " | ".join([REDACTED] * len(values[::97]))
    remember("abcdefgh-12345678")
    remember("12345678-zzzzzzzz")  # overlaps the first one's end
    assert redact("x abcdefgh-12345678-zzzzzzzz y") == f"x {REDACTED} y"


def test_secrets_remembered_between_log_lines_are_matched_and_automatons_stay_few():
    from llmconn import redaction

    values = [f"step{n:04d}-" + "x" * 12 for n in range(600)]
    for n, value in enumerate(values):
        remember(value)
        assert redact(f"a {value} b") == f"a {REDACTED} b"  # built at once for the next line
    assert redact(" ".join(values[::50])) == " ".join([REDACTED] * len(values[::50]))
    # Merged geometrically: a few automatons, not one per secret.
    assert len(redaction._matcher.automatons) <= 2 * len(values).bit_length()
