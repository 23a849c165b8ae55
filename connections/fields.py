"""The encrypted field that holds a connection's secrets."""

from __future__ import annotations

import json

from cryptography.fernet import InvalidToken
from fernet_fields import EncryptedTextField

from llmconn.redaction import remember

from .crypto import keyring


class UnreadableSecrets:
    """Stands for secrets that no configured key can decrypt (a wrong or retired key).

    Loading such a row does not fail, so listings keep working; the connection shows as
    "credentials unreadable" until its secrets are entered again. Saving it back is refused, so
    the undecryptable token is never overwritten by accident.
    """

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "<unreadable secrets>"


UNREADABLE = UnreadableSecrets()


class EncryptedSecretsField(EncryptedTextField):
    """A dict of secret values, stored as one Fernet token (JSON inside).

    Differences from the library's field: keys come from the current settings on every use
    (so FERNET_KEYS changes and tests' override_settings take effect), a row that cannot be
    decrypted loads as UNREADABLE instead of raising, and every write records the id of the
    encrypting key in `key_id_field` on the same model.
    """

    def __init__(self, *args, key_id_field: str = "secrets_key_id", **kwargs):
        self.key_id_field = key_id_field
        kwargs.setdefault("default", dict)
        kwargs.setdefault("blank", True)
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        kwargs["key_id_field"] = self.key_id_field
        kwargs.pop("default", None)
        kwargs.pop("blank", None)
        return name, path, args, kwargs

    @property
    def fernet(self):  # the parent's is a cached_property frozen at first use
        return keyring().multi

    def pre_save(self, model_instance, add):
        value = super().pre_save(model_instance, add)
        if isinstance(value, UnreadableSecrets):
            raise ValueError(
                "Refusing to save secrets that could not be decrypted; enter them again."
            )
        setattr(model_instance, self.key_id_field, "" if value is None else keyring().primary_id)
        return value

    def get_prep_value(self, value):
        if value is None:
            return None
        if isinstance(value, UnreadableSecrets):
            raise ValueError("Refusing to save secrets that could not be decrypted.")
        return json.dumps(value, sort_keys=True)

    def get_db_prep_save(self, value, connection):
        if value is None:
            return None
        remember(value)
        token = keyring().encrypt(self.get_prep_value(value).encode())
        return connection.Database.Binary(token)

    def from_db_value(self, value, expression, connection, *args):
        if value is None:
            return None
        try:
            plaintext, _ = keyring().decrypt(bytes(value))
        except InvalidToken:
            return UNREADABLE
        value = json.loads(plaintext)
        remember(value)
        return value

    def to_python(self, value):
        if value is None or isinstance(value, (dict, UnreadableSecrets)):
            return value
        return json.loads(value)
