"""manage.py verify_audit: check the audit hash chain; exit non-zero naming the first broken event."""

from django.core.management.base import BaseCommand, CommandError

from audit.selectors import audit_chain_verify


class Command(BaseCommand):
    help = "Check the audit log's hash chain (edited, deleted or reordered events)."

    def handle(self, *args, **options):
        checked, problem = audit_chain_verify()
        if problem is not None:
            raise CommandError(f"Audit chain broken at {problem} ({checked} event(s) read).")
        self.stdout.write(self.style.SUCCESS(f"Audit chain intact: {checked} event(s) verified."))
