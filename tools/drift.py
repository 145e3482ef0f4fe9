"""Which generated files differ between a fresh generation and the committed copy: the
check behind `make check-gen` for both the Python and the TypeScript stubs."""

from __future__ import annotations

import filecmp
from pathlib import Path


def drifted(fresh: Path, committed: Path, names: set[str]) -> list[str]:
    """``names`` (paths relative to both roots) missing on one side or differing."""
    return sorted(
        n
        for n in names
        if not (fresh / n).exists()
        or not (committed / n).exists()
        or not filecmp.cmp(fresh / n, committed / n, shallow=False)
    )
