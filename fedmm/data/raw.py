"""Raw (pre-split) data every loader returns, before filtering, re-indexing and splitting."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # annotations only: importing this module does not import pandas
    import pandas as pd

#: Columns of :attr:`RawData.interactions`.
INTERACTION_COLUMNS = ("user", "item", "rating", "timestamp")
#: Columns of :attr:`RawData.items` (index = raw item id, str).
ITEM_COLUMNS = ("title", "year", "genres", "description", "image")
#: Columns of :attr:`RawData.kg`.
KG_COLUMNS = ("item", "relation", "entity")


class DataError(ValueError):
    """Bad or missing input data; the message names the file/key and the fix."""


@dataclass
class RawData:
    """What a dataset loader returns.

    Attributes
    ----------
    name : str
        Dataset name used in cache keys and outputs (e.g. ``"ml-100k"``).
    interactions : pandas.DataFrame
        One row per rating: ``user`` (str raw id), ``item`` (str raw id), ``rating`` (float),
        ``timestamp`` (int64, seconds).
    items : pandas.DataFrame
        Item side information indexed by raw item id (str), columns :data:`ITEM_COLUMNS`:
        ``title`` (str), ``year`` (float, NaN if unknown), ``genres`` (str, ``|``-separated,
        ``""`` if none), ``description`` (str, ``""`` if none), ``image`` (str: local path or
        URL, ``""`` if none). Server-side use only.
    kg : pandas.DataFrame or None
        Knowledge-graph triples ``item`` (str raw item id), ``relation`` (str), ``entity`` (str),
        or ``None`` when the dataset has none. Server-side use only.
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    kg: pd.DataFrame | None = None

    def validate(self, source: str) -> None:
        """Raise :class:`DataError` naming ``source`` if a required column is missing or empty."""
        missing = [c for c in INTERACTION_COLUMNS if c not in self.interactions.columns]
        if missing:
            raise DataError(f"{source}: interactions lack columns {missing}; "
                            f"expected {list(INTERACTION_COLUMNS)}")
        if len(self.interactions) == 0:
            raise DataError(f"{source}: no interactions were read; check the file is not empty")
        missing = [c for c in ITEM_COLUMNS if c not in self.items.columns]
        if missing:
            raise DataError(f"{source}: item table lacks columns {missing}; "
                            f"expected {list(ITEM_COLUMNS)}")
        if self.kg is not None:
            missing = [c for c in KG_COLUMNS if c not in self.kg.columns]
            if missing:
                raise DataError(f"{source}: knowledge graph lacks columns {missing}")
