from django.apps import AppConfig


class ConnectionsConfig(AppConfig):
    name = "connections"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from llmconn import metrics

        from .selectors import connection_health_metrics

        # /metrics reads each active connection's last test result from the database.
        metrics.register_collector(connection_health_metrics)
