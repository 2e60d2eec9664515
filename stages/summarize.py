"""Stage `summarize`: rebuild a sweep's leaderboard and plot from its trial directories.

    python -m tinykd stage=summarize dir=<sweep_dir>
"""

from __future__ import annotations

from tinykd.errors import TinyKDError
from tinykd.sweep import summarize


def run(cfg) -> dict:
    if not cfg.dir:
        raise TinyKDError("stage=summarize needs the sweep directory.", "add dir=<sweep directory>.")
    result = summarize(cfg.dir)
    print(f"[tinykd] {result['trials']} trials ({result['finished']} finished): {cfg.dir}/summary.md, summary.csv, "
          "summary.png")
    return result
