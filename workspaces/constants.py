"""Constants of the workspaces app: cache keys, API key format, limits."""

# A cached resolution, API key or budget list is also re-read from the database after this many
# seconds, whatever the versions say: a safety net, not the mechanism edits rely on. Without a
# shared cache (local-memory cache, several processes) it is all there is: one minute. With
# Redis it only bounds the life of an entry whose change could not be announced (Redis down at
# that moment, logged as an error): ten minutes, so that thousands of workspaces called less
# often than once a minute each stay warm (a one-minute life made one call in six cold at
# 10,000 workspaces and 1,000 calls/s).
RESOLUTION_MAX_AGE_SECONDS = 60
SHARED_RESOLUTION_MAX_AGE_SECONDS = 600


def cache_max_age() -> float:
    """The life of a cached resolution, API key or budget list in this process (above)."""
    from llmconn import versions

    return versions.max_age(RESOLUTION_MAX_AGE_SECONDS, SHARED_RESOLUTION_MAX_AGE_SECONDS)

# In-process cache sizes: beyond them the cache is emptied (cheap, and bounds memory). Sized for
# tens of thousands of workspaces (one entry per role called; see bench/RESULTS.md for memory).
MAX_CACHED_RESOLUTIONS = 100_000
MAX_CACHED_KEYS = 100_000

API_KEY_PREFIX = "lck_"
API_KEY_RANDOM_BYTES = 32  # token_urlsafe(32): 43 url-safe characters
API_KEY_SHOWN_PREFIX_LENGTH = 12  # "lck_" + 8 characters, stored to tell keys apart

# last_used_at of an API key is written at most this often.
API_KEY_TOUCH_INTERVAL_SECONDS = 60

# Outbound calls made for workspaces.
PROVIDER_TIMEOUT_SECONDS = 120

# Fallbacks: a connection with this many retryable failures (rate limited, timeout,
# unreachable, provider 5xx) within the window is skipped for COOLDOWN_SECONDS where the
# binding has another candidate, in every process (flags in the shared cache).
COOLDOWN_FAILURES = 3
COOLDOWN_WINDOW_SECONDS = 60
COOLDOWN_SECONDS = 30
