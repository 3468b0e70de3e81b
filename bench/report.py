"""bench/RESULTS.md holds one section per benchmark; each run replaces only its own."""

from __future__ import annotations

import re
from pathlib import Path


def update_section(path: Path, name: str, text: str) -> str:
    begin, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    current = path.read_text() if path.exists() else "# Benchmark results\n\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    updated = pattern.sub(lambda _: block, current) if begin in current else current + "\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(updated)
    return updated
