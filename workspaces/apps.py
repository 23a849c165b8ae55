from django.apps import AppConfig


class WorkspacesConfig(AppConfig):
    name = "workspaces"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The user page of the admin lists personal connections and defaults (read-only).
        from .admin_people import register

        register()

        # Connection tests call /embeddings for a connection that serves the embedding role
        # (connections owns the tests but not the bindings: it asks through this hook).
        from connections.diagnostics import EMBEDDING_USES

        from .selectors import embedding_models_of

        if embedding_models_of not in EMBEDDING_USES:
            EMBEDDING_USES.append(embedding_models_of)

        # Workspaces use connections: tell the connections app where (it imports nothing from
        # here; layers point one way).
        from connections import dependents

        from . import selectors, services
        from .admin import dependent_admin_urls

        dependents.register(dependents.User(
            name="workspaces",
            dependents=selectors.bindings_using_connection,
            count=selectors.connection_use_count,
            move=services.bindings_move,
            admin_urls=dependent_admin_urls,
            binds=selectors.manages_a_workspace,
        ))

        # A deactivated or deleted user's personal keys stop in every process at once.
        services.connect_user_signals()

        # /metrics reports the usage spool's depth (what /readyz shows), at scrape time.
        from llmconn import metrics

        from .usage_spool import depth_metrics

        metrics.register_collector(depth_metrics)
