"""manage.py audit_checkpoint: print the audit chain's head as SEQ:HASH, to keep outside the
database (a ticket, a log shipper, another system). `verify_audit --checkpoint SEQ:HASH` later
proves that the log still extends it, even against someone who holds AUDIT_HMAC_KEY."""

from django.core.management.base import BaseCommand, CommandError

from audit.selectors import audit_chain_head, audit_chain_verify


class Command(BaseCommand):
    help = "Print the audit chain's head (SEQ:HASH) after verifying the chain up to it."

    def handle(self, *args, **options):
        seq, digest = audit_chain_head()
        checked, problem = audit_chain_verify()
        if problem is not None:
            raise CommandError(f"Not a checkpoint: the audit chain is broken at {problem}.")
        # Only the SEQ:HASH line goes to stdout, so that scripts can keep it as is.
        self.stderr.write(f"Audit chain head: event #{seq} of {checked} verified.")
        self.stdout.write(f"{seq}:{digest}")
