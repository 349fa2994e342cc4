"""captioner: image captioning with a timm ViT encoder and a cross-attending decoder (GPT- or Llama-style).

import captioner
captions = captioner.caption(["photo.jpg"], model="runs/shapes/version_0/model")
print(captions[0].text)
"""

from importlib.metadata import version

from captioner.config import CaptionerConfig
from captioner.generate import GenerationConfig
from captioner.inference import Caption, caption
from captioner.model import Captioner
from captioner.tokenizer import CaptionTokenizer

__all__ = ["Caption", "Captioner", "CaptionerConfig", "CaptionTokenizer", "GenerationConfig", "caption"]
__version__ = version("captioner")  # pyproject.toml's, as installed
