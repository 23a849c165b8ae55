"""System checks of the audit settings (https://docs.djangoproject.com/en/5.2/topics/checks/).

AUDIT_HMAC_KEY itself is required by the settings (ImproperlyConfigured without DEBUG), so no
check is needed for it any more; this module stays the place for future audit checks.
"""
