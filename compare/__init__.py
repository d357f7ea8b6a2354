"""Side-by-side interpretability of Mamba and GPT-2."""
from .loading import ALIASES, ModelLoadError, load_model, load_tokenizer
from .model import Model

__all__ = ["ALIASES", "Model", "ModelLoadError", "load_model", "load_tokenizer"]
