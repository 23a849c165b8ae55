from django.apps import AppConfig


class WorkspacesConfig(AppConfig):
    name = "workspaces"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Workspaces use connections: tell the connections app where (it imports nothing from
        # here; layers point one way).
        from connections import dependents

        from . import selectors, services

        dependents.register(dependents.User(
            name="workspaces",
            dependents=selectors.bindings_using_connection,
            count=selectors.connection_use_count,
            move=services.bindings_move,
        ))
