"""Running over inputs, apart from the captioning core (`captioner.inference`): image files captioned batch by
batch into rows (`files`), the rows' writers with resume (`writers`), and many processes (`ranks`)."""

from captioner.runs.files import CaptionRun, RunOptions, caption_files

__all__ = ["CaptionRun", "RunOptions", "caption_files"]
