"""Screenshot of the service's search page, as the README shows it.

    python research/page_screenshot.py --index DIR --out research/figures/search-page.png \
        [--reranker DIR] [--personal DIR --profiles DIR] [--query "cordless drill"] [--user ID]

Starts ``shopsearch serve`` on loopback (``research/bench_serve.py``'s helpers), waits until it
is ready, and has headless Chromium (Debian's ``chromium``) render ``/?q=...&user_id=...``
into a PNG.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlencode

from research.bench_serve import _free_port, start_server, wait_ready


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True, help="The index to serve.")
    parser.add_argument("--out", type=Path, required=True, help="Where the PNG goes.")
    parser.add_argument("--reranker", type=Path, default=None, help="Cross-encoder folder.")
    parser.add_argument("--personal", type=Path, default=None, help="Personal model folder.")
    parser.add_argument("--profiles", type=Path, default=None, help="Profile store folder.")
    parser.add_argument("--query", default="cordless drill", help="The search shown.")
    parser.add_argument("--user", default=None, help="The shopper (needs --profiles).")
    parser.add_argument("--size", default="1200,1400", help="Window WIDTH,HEIGHT in pixels.")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        parser.error("no chromium on PATH (Debian: apt-get install -y chromium)")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    log = args.out.with_suffix(".serve.log")
    extra = ["--personal", str(args.personal)] if args.personal else []
    proc = start_server(args.index, port, 1, args.reranker, log, args.profiles, extra)
    try:
        wait_ready(url, proc, log)
        query = {"q": args.query, **({"user_id": args.user} if args.user else {})}
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run(
                [
                    chromium,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--hide-scrollbars",
                    f"--user-data-dir={profile}",
                    f"--window-size={args.size}",
                    "--virtual-time-budget=15000",
                    f"--screenshot={args.out.resolve()}",
                    f"{url}/?{urlencode(query)}",
                ],
                check=True,
                capture_output=True,
                timeout=180,
            )
    finally:
        proc.terminate()
        proc.wait(30)
    log.unlink(missing_ok=True)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
