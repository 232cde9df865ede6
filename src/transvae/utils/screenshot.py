"""Screenshots of HTML files in headless Chromium: does a self-contained report render from disk?

    png = screenshot(Path("eval/report.html"), Path("eval/report.png"), 1280, 2400)
    is_blank(png)       # True when nothing rendered (a single colour)

    python -m transvae.utils.screenshot eval/report.html --out eval/report.png --height 2400

The command exits 1 if Chromium fails or the screenshot is blank (2: no such file).

Chromium is found through ``$CHROMIUM`` or on ``PATH`` (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["find_chromium", "is_blank", "main", "screenshot"]

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """The Chromium executable: ``$CHROMIUM``, else the first candidate on ``PATH``."""
    return os.environ.get("CHROMIUM") or next((p for n in CANDIDATES if (p := shutil.which(n))), None)


def screenshot(
    report: Path, out: Path, width: int = 1280, height: int = 2000, timeout: float = 120.0
) -> Path:
    """A full-window screenshot of ``report`` (no network, no GPU) written to ``out``.

    Raises:
        FileNotFoundError: no Chromium found.
        RuntimeError: Chromium failed or wrote no screenshot.
        subprocess.TimeoutExpired: it took longer than ``timeout`` seconds.
    """
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError(
            "no chromium executable found (apt-get install chromium, or set CHROMIUM=...)"
        )
    out = out.resolve()
    out.unlink(missing_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--hide-scrollbars"]  # fmt: skip
    cmd = [exe, *flags, f"--screenshot={out}", f"--window-size={width},{height}", report.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if not out.is_file():
        raise RuntimeError(
            f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
        )
    return out


def is_blank(png: Path) -> bool:
    """True if the image is a single colour (nothing rendered)."""
    from PIL import Image

    with Image.open(png) as im:
        lo, hi = im.convert("L").getextrema()
    return lo == hi


def main(argv: list[str] | None = None) -> int:
    """``python -m transvae.utils.screenshot REPORT.html [--out PNG] [--width W] [--height H]``."""
    import argparse
    import sys

    p = argparse.ArgumentParser(description="Screenshot an HTML file (an evaluation report.html) in headless Chromium.")
    p.add_argument("report", type=Path, help="the HTML file")
    p.add_argument("--out", type=Path, default=None, help="screenshot PNG (default: next to the report)")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=2000)
    a = p.parse_args(argv)
    if not a.report.is_file():
        print(f"screenshot: no such file {a.report}", file=sys.stderr)
        return 2
    out = a.out or a.report.with_suffix(".png")
    try:
        screenshot(a.report, out, a.width, a.height)
    except (FileNotFoundError, RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"screenshot: {e}", file=sys.stderr)
        return 1
    blank = is_blank(out)
    print(f"screenshot: {out} is blank" if blank else f"wrote {out}", file=sys.stderr if blank else sys.stdout)
    return 1 if blank else 0


if __name__ == "__main__":
    raise SystemExit(main())
