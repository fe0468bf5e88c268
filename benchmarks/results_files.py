"""How every benchmark script leaves its result: STEM.json (raw, for update_docs and later readers) and
STEM.md (the table the README embeds) in the results folder, and the table on stdout."""
from __future__ import annotations

import json
from pathlib import Path


def write_results(out: Path, stem: str, result: dict, lines: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
