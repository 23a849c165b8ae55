"""manage.py rotate_keys [--dry-run] [--batch-size N]: re-encrypt every secret under the first
key of FERNET_KEYS. Resumable (rerun after an interruption), verifies with the primary key alone,
exits non-zero listing rows it could not decrypt. See connections/key_rotation.py."""

from django.core.management.base import BaseCommand, CommandError

from audit.context import audit_context
from connections.key_rotation import DEFAULT_BATCH_SIZE, rotate_keys


class ProgressBar:
    """A one-line progress bar on a terminal; a line per batch otherwise."""

    def __init__(self, stream, width: int = 30):  # stream: a command's OutputWrapper
        self.stream, self.width = stream, width
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def __call__(self, done: int, total: int, label: str) -> None:
        total = max(total, done, 1)
        filled = int(self.width * done / total)
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} {label}"
        self.stream.write(("\r" + line) if self.tty else (line + "\n"), ending="")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n", ending="")


class Command(BaseCommand):
    help = "Re-encrypt every stored secret with the first key of FERNET_KEYS (online, resumable)."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true",
                            help="Count and check the rows to re-encrypt; write nothing.")
        parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                            help=f"Rows per committed batch (default {DEFAULT_BATCH_SIZE}).")

    def handle(self, *args, dry_run=False, batch_size=DEFAULT_BATCH_SIZE, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        bar = ProgressBar(self.stderr)
        with audit_context(auth_kind="command"):
            result = rotate_keys(batch_size=batch_size, dry_run=dry_run, progress=bar)
        bar.close()
        out = self.stdout
        out.write(f"Primary key id: {result.primary_id}")
        if dry_run:
            out.write(f"Dry run: {result.to_do} value(s) would be re-encrypted; nothing written.")
        else:
            out.write(f"Re-encrypted {result.re_encrypted} value(s); fixed the key id of "
                      f"{result.relabelled}; {result.changed_meanwhile} changed during the run "
                      "(left as saved).")
        problems = []
        for label, pk in result.unreadable:
            problems.append(f"  {label} pk={pk}: no configured key can decrypt it")
        for label, pk in result.not_on_primary:
            problems.append(f"  {label} pk={pk}: not readable with the primary key alone "
                            "(changed during the run? run rotate_keys again)")
        if problems:
            raise CommandError(
                f"{len(problems)} row(s) are not on the primary key:\n" + "\n".join(problems)
                + "\nKeep the old keys in FERNET_KEYS; enter those secrets again, or restore the "
                "key that encrypted them.")
        if not dry_run:
            out.write(self.style.SUCCESS("Verified: every stored secret decrypts with the primary key alone."))
