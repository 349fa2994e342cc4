"""THE parquet output of a recaptioned shard: its schema (one row per input item), the caption rows of
`captioner.runs.writers.caption_row` turned into a table, and the run's description (model, decoding options) in the
file's key-value metadata under `captioner`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from captioner.data.shard_items import ShardItem

if TYPE_CHECKING:
    import pyarrow as pa

METADATA_KEY = b"captioner"  # the file's key-value metadata: a JSON object (model, revision, generation, precision)
COLUMNS = ["key", "source", "caption", "score", "n_best", "truncated", "error", "original_caption"]


def require_pyarrow() -> None:
    """ImportError saying how to install pyarrow, where it is missing."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ImportError("parquet shards need pyarrow: pip install -e '.[scale]'") from None


def schema(metadata: dict[str, Any] | None = None) -> pa.Schema:
    """The columns of an output shard (`COLUMNS`), with `metadata` as JSON under `METADATA_KEY`."""
    import pyarrow as pa

    hypothesis = pa.struct([("caption", pa.string()), ("score", pa.float64())])
    fields = [
        ("key", pa.string()),
        ("source", pa.string()),
        ("caption", pa.string()),  # null for an error row
        ("score", pa.float64()),  # the caption's log-probability score; null for an error row
        ("n_best", pa.list_(hypothesis)),  # every returned hypothesis, best first (one for greedy decoding)
        ("truncated", pa.bool_()),  # cut by the token limit
        ("error", pa.string()),  # why the item has no caption; null when it has one
        ("original_caption", pa.string()),  # the shard's own caption, where it had one
    ]
    meta = {METADATA_KEY: json.dumps(metadata or {}, ensure_ascii=False, allow_nan=False).encode()}
    return pa.schema(fields, metadata=meta)


def table(items: list[ShardItem], rows: list[dict[str, Any]], file_schema: pa.Schema) -> pa.Table:
    """One batch's table: `rows` (caption rows or {"path", "error"}, in `items`' order) with the items' columns."""
    import pyarrow as pa

    records = []
    for item, row in zip(items, rows, strict=True):
        caption = row.get("caption")
        n_best = row.get("n_best") or ([{"caption": caption, "score": row["score"]}] if caption is not None else [])
        records.append(
            {
                "key": item.key,
                "source": item.source,
                "caption": caption,
                "score": row.get("score"),
                "n_best": n_best,
                "truncated": bool(row.get("truncated")),
                "error": row.get("error"),
                "original_caption": item.original_caption,
            }
        )
    return pa.Table.from_pylist(records, schema=file_schema)


def read_metadata(path: str) -> dict[str, Any]:
    """The run's description stored in an output shard."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(METADATA_KEY, b"{}"))
