"""Shared fixtures: a tiny GroupLens-format dataset made by the tests."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def write_tiny_grouplens(directory: Path, n_users: int = 12, n_items: int = 30, seed: int = 0) -> Path:
    """Write ``u.data``/``u.item`` (GroupLens 100K layout) with clustered tastes: users of group
    ``g`` mostly rate items of group ``g``, so a recommender can learn something."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for u in range(1, n_users + 1):
        g = u % 3
        pool = [i for i in range(1, n_items + 1) if i % 3 == g]
        k = int(rng.integers(6, 10))
        items = rng.choice(pool, size=min(k, len(pool)), replace=False)
        for t, i in enumerate(items):
            rows.append(f"{u}\t{i}\t{int(rng.integers(1, 6))}\t{880000000 + 1000 * t + u}")
    (directory / "u.data").write_text("\n".join(rows) + "\n")
    genres = ["0"] * 19
    lines = []
    for i in range(1, n_items + 1):
        flags = list(genres)
        flags[1 + i % 3] = "1"
        lines.append(f"{i}|Movie {i} (199{i % 10})|01-Jan-199{i % 10}||http://x|" + "|".join(flags))
    (directory / "u.item").write_text("\n".join(lines) + "\n", encoding="latin-1")
    return directory


@pytest.fixture()
def tiny_grouplens(tmp_path: Path) -> Path:
    return write_tiny_grouplens(tmp_path / "gl")
