"""Running over inputs, apart from the captioning core (`captioner.inference`): image files captioned batch by
batch into rows (`files`), the rows' writers with resume (`writers`), many processes (`ranks`), and sharded datasets
recaptioned shard by shard into parquet or webdataset shards (`shards`, `parquet_rows`, `tar_rows`)."""

from captioner.runs.files import CaptionRun, RunOptions, caption_files

__all__ = ["CaptionRun", "RunOptions", "caption_files"]
