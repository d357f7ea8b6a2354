"""Side-by-side interpretability of Mamba, GPT-2 and Pythia."""
from .loading import ALIASES, ModelLoadError, load_model, load_tokenizer
from .model import Model, NonFiniteError
from .comparison import Comparison, Run, Stopped, Trajectory, compare
from .metrics import tokenizer_stats
from .channels import channel_sensitivity
from .noise import noise_sweep
from .prediction import OverflowRunsWarning
from .phase import phase_transition
from .patching import patch_sweep
from .causal_trace import causal_trace
from .hidden_attention import attention_map, head_pattern, hidden_attention
from .knockout import knockout
from . import reproduce  # the package; calling it (the old function) warns
from .reproduce import thesis_report
from .lens import logit_lens
from .tuned_lens import train_tuned_lens
from .attribution import attribution_patch

__all__ = ["ALIASES", "Model", "ModelLoadError", "NonFiniteError", "load_model", "load_tokenizer",
           "compare", "Comparison", "Run", "Stopped", "Trajectory", "tokenizer_stats"]
__all__ += ["noise_sweep", "OverflowRunsWarning", "phase_transition", "channel_sensitivity", "thesis_report",
            "reproduce"]
__all__ += ["patch_sweep", "causal_trace", "hidden_attention", "head_pattern", "attention_map", "knockout"]
__all__ += ["logit_lens", "train_tuned_lens", "attribution_patch"]
