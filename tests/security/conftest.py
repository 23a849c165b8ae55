"""Fixtures of the adversarial suite: the workspace fixtures (connections to the fake upstream,
workspaces, API keys, the in-process gateway client) are shared with tests/workspaces."""

from tests.workspaces.conftest import (  # noqa: F401  (fixtures)
    _fresh_resolution_cache,
    gateway,
    make_connection,
    make_key,
    make_workspace,
)
