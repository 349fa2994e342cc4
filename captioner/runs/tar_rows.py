"""THE webdataset output of a recaptioned tar shard: every input sample with all its members, keyed as in the
input, and the new caption added as its `.txt` member (the input's own `.txt`, if any, kept as `.original.txt`);
a sample that could not be captioned keeps its members and gets no `.txt`. Member times are fixed, so that the
same input and model write the same bytes."""

from __future__ import annotations

from typing import IO, Any

from captioner.data.shard_items import ShardItem


class TarRows:
    """Writes captioned samples into an open binary file (closed by the caller)."""

    def __init__(self, file: IO[bytes]) -> None:
        import webdataset as wds

        self.writer = wds.TarWriter(file, encoder=False, mtime=0.0)

    def write(self, items: list[ShardItem], rows: list[dict[str, Any]]) -> None:
        for item, row in zip(items, rows, strict=True):
            sample: dict[str, Any] = {"__key__": item.key, **item.members}
            if "txt" in sample:
                sample["original.txt"] = sample.pop("txt")
            if row.get("caption") is not None:
                sample["txt"] = row["caption"].encode("utf-8")
            self.writer.write(sample)

    def close(self) -> None:
        self.writer.close()  # writes the tar's end blocks; the file object stays open (it is not the writer's)
