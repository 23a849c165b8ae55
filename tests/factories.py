"""factory_boy factories for test data."""

import json

import factory

from connections.models import Connection
from connections.secrets import make_hint


class ConnectionFactory(factory.django.DjangoModelFactory):
    """A saved OpenAI-compatible connection with an API key (a fake, test-only key)."""

    class Meta:
        model = Connection

    name = factory.Sequence(lambda n: f"conn-{n}")
    provider = "openai_compatible"
    auth_method = "api_key"
    base_url = "http://127.0.0.1:9/v1"
    default_model = "test-model"
    config = factory.LazyFunction(dict)
    secrets = factory.Sequence(lambda n: {"api_key": f"test-key-{n:04d}-abcdefgh"})
    secret_hints = factory.LazyAttribute(lambda o: {k: make_hint(v) for k, v in o.secrets.items()})


# A Vertex AI service account key in the shape Google gives it (pretty-printed); the key is
# not a real one. Vertex connections accept nothing else (providers.catalog.VertexAI).
VERTEX_KEY = {
    "type": "service_account",
    "project_id": "proj-1234",
    "private_key_id": "0123456789abcdef",
    "private_key": "-----BEGIN PRIVATE KEY-----\nTEST-ONLY-NOT-A-KEY\n-----END PRIVATE KEY-----\n",
    "client_email": "llmconn-test@proj-1234.iam.gserviceaccount.com",
    "client_id": "1234567890",
    "token_uri": "https://oauth2.googleapis.com/token",
}
VERTEX_KEY_JSON = json.dumps(VERTEX_KEY, indent=2)


def sample_secret(name: str) -> str:
    """A valid value for a secret field of the catalog (`name`), for tests that fill them all."""
    return VERTEX_KEY_JSON if name == "service_account_json" else f"secret-{name}-0123456789"
