"""Render an evaluation report.html in headless Chromium and save a screenshot.

Checks that the report is self-contained (opens from disk, no server, no network) and renders:
exits 1 if Chromium fails or the screenshot is blank.

    apt-get install -y chromium          # Debian; or set CHROMIUM=/path/to/chrome
    python benchmarks/render_report.py eval/report.html --out eval/report.png --height 2400

Args (command line):
    report: path of report.html.
    --out: PNG to write (default: next to the report, report.png).
    --width / --height: browser window size in CSS pixels.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """The Chromium executable: $CHROMIUM, else the first candidate on PATH."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(
    report: Path, out: Path, width: int = 1280, height: int = 2000, timeout: float = 120.0
) -> Path:
    """Take a full-window screenshot of ``report`` with headless Chromium.

    Args:
        report: the HTML file.
        out: PNG path to write.
        width, height: window size.
        timeout: seconds before giving up.
    Returns:
        ``out``.
    Raises:
        FileNotFoundError: no Chromium found.
        RuntimeError: Chromium failed or wrote no screenshot.
    """
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError(
            "no chromium executable found (apt-get install chromium, or set CHROMIUM=...)"
        )
    out = out.resolve()
    out.unlink(missing_ok=True)
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--screenshot={out}",
        f"--window-size={width},{height}",
        report.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if not out.is_file():
        raise RuntimeError(
            f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
        )
    return out


def is_blank(png: Path) -> bool:
    """True if the screenshot is a single colour (nothing rendered)."""
    from PIL import Image

    with Image.open(png) as im:
        lo, hi = im.convert("L").getextrema()
    return lo == hi


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=2000)
    args = ap.parse_args(argv)
    if not args.report.is_file():
        print(f"render_report: no such file {args.report}", file=sys.stderr)
        return 2
    out = args.out or args.report.with_suffix(".png")
    try:
        screenshot(args.report, out, args.width, args.height)
    except (FileNotFoundError, RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"render_report: {e}", file=sys.stderr)
        return 1
    if is_blank(out):
        print(f"render_report: {out} is blank", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
