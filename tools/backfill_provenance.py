"""Give the result JSONs that predate ``transvae.utils.provenance`` a ``provenance`` block, honestly.

    python tools/backfill_provenance.py            # docs/benchmarks/*.json without one

Only what can be recovered is written, marked ``"recorded_after": true``: the command the JSON
itself recorded, its machine block (CPU, threads, load average, versions it named), and as the
commit the one that *added the file* (``git log --diff-filter=A``: the result was measured at
or before it; the exact commit and whether the tree was dirty were not recorded, so ``dirty`` is
``null``). A JSON that was a bare list of records (speed.py's old format) becomes
``{"benchmark": "speed", "records": [...]}``; no measured value changes. Idempotent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERSION_KEYS = ("python", "torch", "torchvision", "transvae", "diffusers", "timm")


def added_by(path: Path) -> str | None:
    out = subprocess.run(["git", "-C", str(ROOT), "log", "--diff-filter=A", "--format=%H", "--", str(path.relative_to(ROOT))],
                         capture_output=True, text=True).stdout.split()  # fmt: skip
    return out[-1] if out else None


def backfill(path: Path) -> bool:
    d = json.loads(path.read_text())
    if isinstance(d, dict) and "provenance" in d:
        return False
    if isinstance(d, list):
        d = {"benchmark": "speed", "records": d}
    first = (d.get("records") or [{}])[0]
    machine = dict(d.get("machine") or first.get("machine") or {})
    run = d.get("run") or {}
    commit = added_by(path)
    d["provenance"] = {
        "recorded_after": True,
        "command": d.get("command") or first.get("command") or run.get("command"),
        "git": {"commit": commit, "dirty": None, "note": "the commit that added this file (the measuring commit was not recorded)"},
        "versions": {k: machine.get(k) or run.get(f"{k}_version") for k in VERSION_KEYS},
        "machine": {
            "cpu": machine.get("cpu"), "cpu_count": machine.get("cpu_count"), "torch_threads": machine.get("torch_threads"),
            "gpu": machine.get("gpu"), "platform": machine.get("platform"),
            "load_average_at_start": machine.get("load_average_at_start"), "load_average_at_end": machine.get("load_average_at_end"),
        },  # fmt: skip
        "seeds": d.get("seeds") or ([d["settings"]["seed"]] if isinstance(d.get("settings"), dict) and "seed" in d["settings"] else None),
        "started_at": run.get("date"),
        "wall_seconds": d.get("wall_seconds"),
        "steps": None,
    }
    path.write_text(json.dumps(d, indent=2) + "\n")
    return True


def main() -> int:
    done = [p.name for p in sorted((ROOT / "docs" / "benchmarks").glob("*.json")) if backfill(p)]
    print(f"added provenance to {len(done)} file(s): {', '.join(done)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
