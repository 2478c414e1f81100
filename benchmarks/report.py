"""Write one benchmark's section into docs/benchmarks.md, leaving the other sections as they are."""

from __future__ import annotations

import os
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nEvery figure here is printed by a script under `benchmarks/`; the command is given with it.\n"


def write_section(heading: str, body: str, doc: Path = DOC) -> None:
    """Replace (or append) the ``## heading`` section of ``doc`` atomically."""
    text = doc.read_text() if doc.exists() else HEADER
    section = f"## {heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = (
        pattern.sub(lambda _: section + "\n", text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + section
    )
    tmp = doc.with_suffix(".md.tmp")
    tmp.write_text(text.rstrip() + "\n")
    os.replace(tmp, doc)
