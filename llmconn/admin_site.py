"""The admin site: what a staff user works with comes first on the index.

Order: Connections, Workspaces, Usage (reports, budgets, records), Audit, then people (Users
and groups) and, last, "System": django-celery-beat's schedules and DRF's tokens, which are
plumbing. An app's own page (/admin/<app>/) keeps Django's listing.
"""

from __future__ import annotations

from django.contrib import admin

# (group name or None for the app's own name, app label, model object names in order)
GROUPS: list[tuple[str | None, str, list[str]]] = [
    (None, "connections", ["Connection"]),
    (None, "workspaces", ["Workspace", "SystemDefault", "WorkspaceAPIKey"]),
    ("Usage", "workspaces", ["UsageReport", "Budget", "UsageRecord"]),
    (None, "audit", []),
    (None, "auth", []),
]
SYSTEM_APPS = ("django_celery_beat", "authtoken", "django_celery_results")


class LlmconnAdminSite(admin.AdminSite):
    site_header = "llmconn administration"
    site_title = "llmconn admin"
    index_title = "Connections, workspaces, usage and audit"

    def get_app_list(self, request, app_label=None):
        apps = super().get_app_list(request, app_label)
        if app_label is not None:
            return apps
        by_label = {app["app_label"]: app for app in apps}
        taken: set[tuple[str, str]] = set()
        ordered = []
        for name, label, wanted in GROUPS:
            app = by_label.get(label)
            if app is None:
                continue
            models = {m["object_name"]: m for m in app["models"]}
            if wanted:
                chosen = [models[n] for n in wanted if n in models]
                if name is None:  # the app's group also keeps models not placed elsewhere
                    placed = {n for _, lbl, names in GROUPS if lbl == label for n in names}
                    chosen += [m for n, m in models.items() if n not in placed]
            else:
                chosen = list(app["models"])
            chosen = [m for m in chosen if (label, m["object_name"]) not in taken]
            if not chosen:
                continue
            taken.update((label, m["object_name"]) for m in chosen)
            group = dict(app, models=chosen)
            if name:
                group["name"] = name
                group["app_url"] = chosen[0].get("admin_url") or app["app_url"]
            ordered.append(group)
        system = [m for app in apps if app["app_label"] in SYSTEM_APPS for m in app["models"]]
        rest = [app for app in apps if app["app_label"] not in SYSTEM_APPS
                and app["app_label"] not in {label for _, label, _ in GROUPS}]
        ordered += rest
        if system:
            first = next(app for app in apps if app["app_label"] in SYSTEM_APPS)
            ordered.append({**first, "name": "System", "app_label": "system",
                            "app_url": first["app_url"], "models": system})
        return ordered
