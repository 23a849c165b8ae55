from django.apps import AppConfig


class WorkspacesConfig(AppConfig):
    name = "workspaces"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The user page of the admin lists personal connections and defaults (read-only).
        from .admin_people import register

        register()
