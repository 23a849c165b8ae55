"""factory_boy factories for test data."""

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
