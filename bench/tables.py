"""Markdown tables from the benches' rows (``bench/rows/<bench>.jsonl``, written by each bench
through ``_harness.record``): one table per bench, one line per row, tagged with the machine
and the commit that produced it. bench/RESULTS.md's tables of record are pasted from here.

    python bench/tables.py                     # every bench
    python bench/tables.py probes tracking     # those named
    python bench/tables.py probes --commits 6119840,0766662   # rows of these commits only
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

# _harness.ROWS, named again so that making tables loads neither torch nor the package.
ROWS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rows")
# Tags every row carries, shown first; "command" and "torch" are left to the note under the table.
TAGS = ("date", "commit", "machine")
HIDDEN = ("bench", "command", "torch")


def read_rows(bench: str) -> list[dict]:
    with open(os.path.join(ROWS, f"{bench}.jsonl"), encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def table(rows: list[dict]) -> str:
    """A markdown table of ``rows``: the tags, then every other field in first-seen order."""
    fields = list(TAGS)
    for r in rows:
        fields += [k for k in r if k not in fields and k not in HIDDEN]
    lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    lines += ["| " + " | ".join(_cell(r.get(k)) for k in fields) + " |" for r in rows]
    commands = sorted({f"`{r['command']}` (torch {r['torch']})" for r in rows if "command" in r})
    return "\n".join(lines) + ("\n\nMade by " + "; ".join(commands) + "." if commands else "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("benches", nargs="*", help="bench names (default: every file in bench/rows/)")
    p.add_argument("--commits", default=None, help="comma-separated commits to keep (a '+' suffix matches too)")
    args = p.parse_args(argv)
    names = args.benches or sorted(os.path.basename(f)[:-6] for f in glob.glob(os.path.join(ROWS, "*.jsonl")))
    keep = None if args.commits is None else {c.strip() for c in args.commits.split(",")}
    for name in names:
        rows = read_rows(name)
        if keep is not None:
            rows = [r for r in rows if r.get("commit", "").rstrip("+") in keep]
        print(f"### {name}\n\n{table(rows)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
