"""manage.py verify_audit [--checkpoint SEQ:HASH]: check the keyed audit chain; exit non-zero
naming the first broken event, or when the log no longer extends the checkpoint."""

from django.core.management.base import BaseCommand, CommandError

from audit.selectors import audit_chain_verify, parse_checkpoint


class Command(BaseCommand):
    help = ("Check the audit log's keyed hash chain (edited, deleted or reordered events); with "
            "--checkpoint, also that the log still extends a head printed by audit_checkpoint.")

    def add_arguments(self, parser):
        parser.add_argument("--checkpoint", metavar="SEQ:HASH",
                            help="A head printed earlier by audit_checkpoint and kept outside "
                                 "the database.")

    def handle(self, *args, checkpoint=None, **options):
        point = None
        if checkpoint:
            try:
                point = parse_checkpoint(checkpoint)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
        checked, problem = audit_chain_verify(checkpoint=point)
        if problem is not None:
            raise CommandError(f"Audit chain broken at {problem} ({checked} event(s) read).")
        suffix = f"; it extends checkpoint #{point[0]}" if point else ""
        self.stdout.write(self.style.SUCCESS(
            f"Audit chain intact: {checked} event(s) verified{suffix}."))
