"""What log redaction costs per line: `python bench/redaction.py [--no-record]`.

Times `redact()` on a typical log line (no secret in it, and one with a remembered secret) with
0, 2,000 and 20,000 remembered secrets, for the current llmconn/redaction.py (Aho-Corasick) and
for the previous one (a scan of every remembered secret under a lock, kept in git as
6bf5ed8:llmconn/redaction.py), plus the time to remember the secrets (the automatons' builds
included: built at the first line after them). In-process, no services needed. Appends a table to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OLD_COMMIT = "6bf5ed8"
LINE = ("Connection test 0f9c2d8e-1b7a-4c55-9e0b-3f1d2a4b5c6d: failed unreachable (upstream "
        "http://10.0.0.12:8000/v1 refused the connection after 3.2 s; workspace 'support-bot', "
        "model 'gpt-4o-mini', attempt 2 of 3)")


def load(name: str, source: str):
    path = Path(tempfile.mkdtemp()) / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def per_call_us(fn, text: str, seconds: float = 0.5) -> float:
    n, start = 0, time.perf_counter()
    while True:
        for _ in range(50):
            fn(text)
        n += 50
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    new_source = (ROOT / "llmconn" / "redaction.py").read_text()
    old_source = subprocess.run(["git", "show", f"{OLD_COMMIT}:llmconn/redaction.py"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout
    rows = ["| secrets | version | remember all + first line (s) | clean line (µs) | "
            "line with a secret (µs) |",
            "|---|---|---|---|---|"]
    for count in (0, 2_000, 20_000):
        values = [f"sk-{secrets.token_urlsafe(24)}" if i % 2 else secrets.token_hex(20)
                  for i in range(count)]
        for version, source in (("before (scan + lock)", old_source),
                                ("now (Aho-Corasick)", new_source)):
            module = load(f"redaction_{abs(hash((count, version)))}", source)
            start = time.perf_counter()
            for value in values:
                module.remember(value)
            module.redact(LINE)  # (the current version builds its automaton here)
            remember_s = time.perf_counter() - start
            clean = per_call_us(module.redact, LINE)
            secret_line = LINE + (f" key {values[len(values) // 2]}" if values else "")
            dirty = per_call_us(module.redact, secret_line)
            if values:
                assert values[len(values) // 2] not in module.redact(secret_line)
            rows.append(f"| {count:,} | {version} | {remember_s:.2f} | {clean:.1f} | "
                        f"{dirty:.1f} |")
            print(rows[-1], flush=True)
    table = "\n".join(rows)
    if not args.no_record:
        load_avg = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        with open(ROOT / "bench" / "RESULTS.md", "a") as fh:
            fh.write(f"\n## Log redaction per line, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} "
                     f"UTC\n\n`python bench/redaction.py`; {os.cpu_count()} cores, load "
                     f"{load_avg} (shared machine: absolute numbers are noisy, the ratio is "
                     f"the point). Line: {len(LINE)} characters.\n\n{table}\n")


if __name__ == "__main__":
    main()
