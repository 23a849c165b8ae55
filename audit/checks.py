"""System checks of the audit settings (https://docs.djangoproject.com/en/5.2/topics/checks/)."""

from django.conf import settings
from django.core.checks import Warning, register


@register()
def audit_hmac_key_check(app_configs, **kwargs):
    """Warn when production runs without its own AUDIT_HMAC_KEY."""
    if settings.DEBUG or getattr(settings, "AUDIT_HMAC_KEY", ""):
        return []
    return [Warning(
        "AUDIT_HMAC_KEY is not set: audit fingerprints of secrets use a key derived from "
        "SECRET_KEY.",
        hint="Set AUDIT_HMAC_KEY to a long random string, separate from SECRET_KEY and "
             "FERNET_KEYS; fingerprints made before the change will no longer match.",
        id="audit.W001",
    )]
