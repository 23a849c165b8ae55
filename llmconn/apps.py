"""The admin site's app config: Django's admin with llmconn's own AdminSite (index order)."""

from django.contrib.admin.apps import AdminConfig


class LlmconnAdminConfig(AdminConfig):
    """Replaces "django.contrib.admin" in INSTALLED_APPS; `admin.site` is then our site.
    https://docs.djangoproject.com/en/5.2/ref/contrib/admin/#overriding-the-default-admin-site
    """

    default_site = "llmconn.admin_site.LlmconnAdminSite"
