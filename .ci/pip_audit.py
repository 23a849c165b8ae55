"""Run pip-audit over the installed project environment and say honestly what it could check.

    python .ci/pip_audit.py PYTHON_OF_THE_ENV_TO_AUDIT [PIP_AUDIT_EXECUTABLE]

pip-audit audits the environment that requirements.txt was installed into (.venv: the pinned
packages and everything they pulled in). Exit status: 1 when a known vulnerability is
reported, 0 otherwise. Packages that could not be audited (e.g. the vulnerability service is
unreachable, as on machines without access to pypi.org / osv.dev) do NOT fail the run: they are
counted and listed, and the summary says plainly that nothing was checked for them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile


def main(argv: list[str]) -> int:
    target = argv[1]
    pip_audit = argv[2] if len(argv) > 2 else "pip-audit"
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "audit.json")
        env = dict(os.environ, PIPAPI_PYTHON_LOCATION=target)  # audit that env, not ours
        proc = subprocess.run(
            [pip_audit, "--local", "--progress-spinner", "off", "--timeout", "10",
             "--format", "json", "--output", report],
            env=env, capture_output=True, text=True)
        if not os.path.exists(report):
            print("pip-audit did not run:", proc.stderr.strip()[-2000:], file=sys.stderr)
            return 2
        with open(report, encoding="utf-8") as fh:
            data = json.load(fh)
    deps = data.get("dependencies", [])
    skipped = [d for d in deps if d.get("skip_reason")]
    audited = [d for d in deps if not d.get("skip_reason")]
    vulnerable = [d for d in audited if d.get("vulns")]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fixed version"
            print(f"VULNERABLE {dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixes})")
    print(f"pip-audit: {len(deps)} packages, {len(audited)} audited, "
          f"{len(vulnerable)} with known vulnerabilities, {len(skipped)} could not be audited.")
    if skipped:
        reasons = sorted({d["skip_reason"].split(":")[0] for d in skipped})
        print(f"NOT AUDITED ({len(skipped)}): {', '.join(d['name'] for d in skipped)}")
        print(f"  reason: {'; '.join(reasons)}. Nothing is known about these packages: run "
              "pip-audit where pypi.org or osv.dev is reachable.")
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
