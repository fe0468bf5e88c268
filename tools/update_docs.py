"""Put generated tables into README.md and the pages under docs/, so that no number there is typed by hand.

    python tools/update_docs.py [--check]

Between the lines ``<!-- generated: PATH -->`` and ``<!-- end generated -->`` the documents hold the
content of PATH (relative to the repository), a Markdown file written by a committed script:
benchmarks/*.py write benchmarks/results/, research/table.py writes research/results/,
tools/bundle_default_model.py writes docs/generated/. With
--check, nothing is written and the exit code says whether the documents are up to date.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- generated: (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)


def refreshed(text: str) -> str:
    def fill(match: re.Match) -> str:
        source = REPO / match.group("path")
        if not source.is_file():
            raise SystemExit(f"{match.group('path')} does not exist: run the script that writes it first")
        return match.group(1) + source.read_text().rstrip("\n") + "\n" + match.group(4)

    return BLOCK.sub(fill, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether the documents are up to date")
    args = parser.parse_args()
    stale = []
    for document in DOCUMENTS:
        text = document.read_text()
        new = refreshed(text)
        if new != text:
            stale.append(document.relative_to(REPO))
            if not args.check:
                document.write_text(new)
    print(("stale: " if args.check else "updated: ") + (", ".join(map(str, stale)) or "none"))
    sys.exit(1 if args.check and stale else 0)


if __name__ == "__main__":
    main()
