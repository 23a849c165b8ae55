"""Workspaces: role bindings of connections."""
