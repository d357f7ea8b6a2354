"""Side-by-side interpretability of Mamba, GPT-2 and Pythia."""
from .handle.loading import ALIASES, ModelLoadError, load_model, load_tokenizer
from .handle.model import Model, NonFiniteError
from .analyses.comparison import Comparison, Run, Stopped, Trajectory, compare
from .measures.metrics import tokenizer_stats
from .analyses.channels import channel_sensitivity
from .analyses.noise import noise_sweep
from .engine.prediction import OverflowRunsWarning
from .measures.phase import phase_transition
from .analyses.patching import patch_sweep
from .analyses.causal_trace import causal_trace
from .analyses.hidden_attention import attention_map, head_pattern, hidden_attention
from .analyses.knockout import knockout
from . import reproduce  # the package; calling it (the old function) warns
from .reproduce import thesis_report
from .analyses.lens import logit_lens
from .analyses.tuned_lens import train_tuned_lens
from .analyses.attribution import attribution_patch

__all__ = ["ALIASES", "Model", "ModelLoadError", "NonFiniteError", "load_model", "load_tokenizer",
           "compare", "Comparison", "Run", "Stopped", "Trajectory", "tokenizer_stats"]
__all__ += ["noise_sweep", "OverflowRunsWarning", "phase_transition", "channel_sensitivity", "thesis_report",
            "reproduce"]
__all__ += ["patch_sweep", "causal_trace", "hidden_attention", "head_pattern", "attention_map", "knockout"]
__all__ += ["logit_lens", "train_tuned_lens", "attribution_patch"]
