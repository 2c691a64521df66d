"""Refresh the README's generated blocks from the files the plotting code writes.

    python -m common.readme          # rewrite every block
    python -m common.readme --check  # exit 1 if a block differs from its file (a test runs this)

A block is ``<!-- generated: results/lora/glue_table.md -->`` ... ``<!-- end generated -->``; its
body is the file's content, so no number in those tables is ever typed by hand.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from .paths import REPO_ROOT

BLOCK = re.compile(r"(<!-- generated: (?P<path>[^ ]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)


def refresh(text: str, root: Path = REPO_ROOT) -> str:
    def sub(m: re.Match) -> str:
        path = root / m.group("path")
        if not path.is_file():
            raise FileNotFoundError(f"README block names {m.group('path')}, which does not exist")
        return m.group(1) + path.read_text().rstrip("\n") + "\n" + m.group(4)

    return BLOCK.sub(sub, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--readme", type=Path, default=REPO_ROOT / "README.md")
    a = ap.parse_args(argv)
    old = a.readme.read_text()
    new = refresh(old, a.readme.parent)
    if a.check:
        if new != old:
            print(f"{a.readme}: generated blocks are stale; run `python -m common.readme`", file=sys.stderr)
            return 1
        return 0
    a.readme.write_text(new)
    print(f"refreshed {len(BLOCK.findall(old))} generated blocks in {a.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
