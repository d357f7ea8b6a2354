"""Reproducible prompt suites for comparing Mamba and GPT-2 (see `build`)."""

from datasets_gen.align import Alignment, align
from datasets_gen.build import build, features
from datasets_gen.suites import SUITES
from datasets_gen.tokenizers import DEFAULT_TOKENIZERS, MODELS, load_vocab
