"""captioner: image captioning with a timm ViT encoder and a cross-attending GPT decoder."""

from captioner.config import CaptionerConfig
from captioner.model import Captioner
from captioner.tokenizer import CaptionTokenizer

__all__ = ["Captioner", "CaptionerConfig", "CaptionTokenizer"]
__version__ = "0.1.0"
