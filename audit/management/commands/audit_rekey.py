"""manage.py audit_rekey: after AUDIT_HMAC_KEY changed, prove the audit chain under the previous
key (read from the AUDIT_HMAC_PREVIOUS_KEY environment variable, never from the command line,
where other users could see it) and re-chain it under the current one."""

import os

from django.core.management.base import BaseCommand, CommandError

from audit.context import audit_context
from audit.services import audit_chain_rekey
from llmconn.errors import ApplicationError

PREVIOUS = "AUDIT_HMAC_PREVIOUS_KEY"


class Command(BaseCommand):
    help = (f"Re-chain the audit log under the current AUDIT_HMAC_KEY after verifying it under "
            f"the previous key in {PREVIOUS}; take a new audit_checkpoint afterwards.")

    def handle(self, *args, **options):
        previous = os.environ.get(PREVIOUS, "")
        if not previous:
            raise CommandError(f"Set {PREVIOUS} to the key the chain was written with.")
        try:
            with audit_context(auth_kind="command"):
                event = audit_chain_rekey(previous_key=previous.encode())
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(self.style.SUCCESS(
            f"Audit chain re-keyed: {event.extra['events']} event(s); the old head was "
            f"{event.extra['previous_head']}. New head: {event.seq}:{event.hash} "
            "(keep it as the new checkpoint)."))
