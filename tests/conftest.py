"""Shared fixtures: tiny random models in every on-disk format, built at test time.

Nothing here is a shipped weight: every model is randomly initialised from a config, saved to a
temp dir and loaded back through the public `load_model`, the route a user takes.
"""
from __future__ import annotations

import io
import json
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

CLEAN = "When Mary and John went to the store , John gave a drink to"
CORRUPT = "When Mary and John went to the store , Mary gave a drink to"
SHARED_TOKENIZERS = Path(__file__).resolve().parents[1] / ".." / "shared" / "tokenizers"
WORDS = ("When Mary and John went to the store , gave a drink to she he it I d K f 1 2 3 "
         "cat dog runs the of in on at . ! ? red green blue one two three").split()
TINY_VOCAB = 64  # tokenizer size; models pad their embeddings to 72 rows, as real checkpoints pad
# Tokens mathtext would read as markup (or crash on), and scripts DejaVu Sans does not cover.
HOSTILE = ("$$", "$", "\\", "_", "^", "a_b^c", "\\frac{1}{2}", "$x^2$", "🐍", "👨‍👩‍👧", "日本語", "中文", "שלום")


def tiny_tokenizer():
    """A word-level tokenizer over WORDS (plus <|endoftext|> and <unk>), IDs 0..len-1."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "<unk>": 1}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    for i in range(len(vocab), TINY_VOCAB):
        vocab[f"w{i}"] = i
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|endoftext|>")


def renders(fig):
    """The figure saves as a PNG (mathtext errors and missing fonts surface here)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue().startswith(b"\x89PNG")


def drawn(fig):
    """Every Text artist of the figure (table cells included), after a draw created the ticks."""
    from matplotlib.text import Text

    fig.draw_without_rendering()
    found = fig.findobj(Text)
    for ax in fig.axes:
        for table in ax.tables:
            found += [cell.get_text() for cell in table.get_celld().values()]
    return found


def assert_literal(fig, expected):
    """Each expected string is the whole text of some artist, and every artist showing it is literal."""
    texts = drawn(fig)
    for want in expected:
        showing = [t for t in texts if t.get_text() == want]
        assert showing, f"no artist draws {want!r}"
        assert not any(t.get_parse_math() for t in showing), f"{want!r} is parsed as mathtext"


def ssm_inputs(b, l, d, n, seed=0, gate=False):
    """Random selective-scan inputs x, delta, A, B, C, D (and the gate z with gate=True) in the
    shapes of `compare.ssm.scan`, with Δ > 0 and A < 0 as in a real Mamba."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, l, d, generator=g)
    delta = torch.nn.functional.softplus(torch.randn(b, l, d, generator=g))
    A = -torch.rand(d, n, generator=g) * 4 - 0.1
    B, C = torch.randn(b, l, n, generator=g), torch.randn(b, l, n, generator=g)
    D = torch.randn(d, generator=g)
    return (x, delta, A, B, C, D) + ((torch.randn(b, l, d, generator=g),) if gate else ())


def _jitter(model, seed: int, scale: float = 0.2):
    # Default inits leave D = 1 and tiny embeddings; jitter every weight so bugs show in the logits.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def build_gpt2(directory: Path, *, seed=0, n_layer=2, vocab=72, n_positions=1024, with_tokenizer=True):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=n_layer, n_embd=32, n_head=4, n_positions=n_positions, vocab_size=vocab)
    model = _jitter(GPT2LMHeadModel(cfg), seed).eval()
    model.save_pretrained(directory)
    if with_tokenizer:
        tiny_tokenizer().save_pretrained(directory)
    return model


def build_mamba_hf(directory: Path, *, seed=1, n_layer=2, vocab=72, with_tokenizer=True):
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(seed)
    cfg = MambaConfig(hidden_size=32, num_hidden_layers=n_layer, state_size=8, vocab_size=vocab,
                      expand=2, conv_kernel=4)
    model = _jitter(MambaForCausalLM(cfg), seed).eval()
    with torch.no_grad():  # A = -exp(A_log) must stay a decay; keep A_log at its S4D-real init scale
        for layer in model.backbone.layers:
            layer.mixer.A_log.copy_(torch.log(torch.arange(1, 9.0)).repeat(64, 1))
    model.save_pretrained(directory)
    if with_tokenizer:
        tiny_tokenizer().save_pretrained(directory)
    return model


def build_mamba_ssm(directory: Path, *, seed=2, with_tokenizer=True):
    """The original state-spaces checkpoint layout: mamba_ssm config keys + pytorch_model.bin."""
    directory.mkdir(parents=True, exist_ok=True)
    hf = build_mamba_hf(directory / "_hf", seed=seed, with_tokenizer=False)
    state = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in hf.state_dict().items()}
    torch.save(state, directory / "pytorch_model.bin")
    (directory / "config.json").write_text(json.dumps({
        "d_model": 32, "n_layer": 2, "vocab_size": 70, "pad_vocab_size_multiple": 8,
        "ssm_cfg": {"d_state": 8}, "rms_norm": True, "residual_in_fp32": True,
        "fused_add_norm": True, "tie_embeddings": True}))
    if with_tokenizer:
        tiny_tokenizer().save_pretrained(directory)
    return hf


def build_pythia(directory: Path, *, seed=3, n_layer=2, vocab=72, with_tokenizer=True, hub_layout=True, **sizes):
    """A tiny GPT-NeoX (Pythia's architecture: parallel residual, rotary on a quarter of each head).

    hub_layout: add the non-weight buffers EleutherAI's checkpoints carry (a bool causal mask and
    its fill value); transformers already saves the LM head as `embed_out`, as they do.
    """
    from safetensors.torch import load_file, save_file
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(**{"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64,
                           "max_position_embeddings": 1024, **sizes}, num_hidden_layers=n_layer, vocab_size=vocab,
                        rotary_pct=0.25, use_parallel_residual=True, attn_implementation="eager",
                        bos_token_id=0, eos_token_id=0)
    model = _jitter(GPTNeoXForCausalLM(cfg), seed).eval()
    model.save_pretrained(directory)
    if hub_layout:
        state = load_file(directory / "model.safetensors")
        T = cfg.max_position_embeddings
        for i in range(n_layer):
            state[f"gpt_neox.layers.{i}.attention.bias"] = torch.ones(1, 1, T, T, dtype=torch.bool).tril()
            state[f"gpt_neox.layers.{i}.attention.masked_bias"] = torch.tensor(-1e9)
        save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    if with_tokenizer:
        tiny_tokenizer().save_pretrained(directory)
    return model


MAMBA2_TINY = dict(hidden_size=32, state_size=8, expand=2, head_dim=16, num_heads=4, n_groups=2, conv_kernel=4,
            chunk_size=8)  # transformers' chunk 8: its chunked form crosses chunks on IDS


def build_mamba2_hf(directory, *, seed=4, n_layer=2, vocab=72, tie=False, with_tokenizer=True, **sizes):
    from transformers import Mamba2Config, Mamba2ForCausalLM

    torch.manual_seed(seed)
    cfg = Mamba2Config(**{**MAMBA2_TINY, **sizes}, num_hidden_layers=n_layer, vocab_size=vocab, tie_word_embeddings=tie)
    model = Mamba2ForCausalLM(cfg).eval()
    A_log = [layer.mixer.A_log.detach().clone() for layer in model.backbone.layers]
    _jitter(model, seed)
    with torch.no_grad():  # A = -exp(A_log) must stay a decay at its init scale
        for layer, a in zip(model.backbone.layers, A_log):
            layer.mixer.A_log.copy_(a)
    model.save_pretrained(directory)
    if with_tokenizer:
        tiny_tokenizer().save_pretrained(directory)
    return model


def mamba_ssm_config(**over):
    """config.json of an original state-spaces/mamba2-* checkpoint at the tiny shape."""
    ssm = {"layer": "Mamba2", "d_state": 8, "headdim": 16, "ngroups": 2, "expand": 2, "d_conv": 4}
    cfg = {"d_model": 32, "d_intermediate": 0, "n_layer": 2, "vocab_size": 70, "ssm_cfg": ssm, "attn_layer_idx": [],
           "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
           "pad_vocab_size_multiple": 8, "tie_embeddings": True}
    for key, value in over.items():
        (ssm if key in ssm else cfg)[key] = value
    return cfg


def build_mamba2_ssm(directory, *, seed=5, config=None, with_tokenizer=True):
    """The mamba_ssm layout: its config keys, `backbone.embedding.*`, a tied lm_head, pytorch_model.bin."""
    directory.mkdir(parents=True, exist_ok=True)
    hf = build_mamba2_hf(directory / "_hf", seed=seed, tie=True, with_tokenizer=False)
    state = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in hf.state_dict().items()}
    state["lm_head.weight"] = state["backbone.embedding.weight"]
    torch.save(state, directory / "pytorch_model.bin")
    (directory / "config.json").write_text(json.dumps(config or mamba_ssm_config()))
    if with_tokenizer:
        tiny_tokenizer().save_pretrained(directory)
    return hf


GRANITE_TINY = dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=16,
                    shared_intermediate_size=48, num_local_experts=4, num_experts_per_tok=2, mamba_n_heads=8,
                    mamba_d_state=8, mamba_n_groups=2, mamba_chunk_size=4, position_embedding_type="rope",
                    embedding_multiplier=2.0, logits_scaling=3.0, residual_multiplier=0.5, attention_multiplier=0.3,
                    max_position_embeddings=1024, tie_word_embeddings=True)


def build_granite_hybrid(directory: Path, *, seed=4, layer_types=("mamba", "attention", "mamba", "attention"),
                         vocab=72, with_tokenizer=True, **sizes):
    """A tiny Granite-4.0-H: Mamba-2 and attention layers interleaved (`layer_types`), a mixture of
    experts beside the shared MLP, rotary positions, every multiplier away from 1."""
    from transformers import GraniteMoeHybridConfig, GraniteMoeHybridForCausalLM

    torch.manual_seed(seed)
    cfg = GraniteMoeHybridConfig(**{**GRANITE_TINY, **sizes}, num_hidden_layers=len(layer_types),
                                 layer_types=list(layer_types), vocab_size=vocab, bos_token_id=0, eos_token_id=0,
                                 pad_token_id=0)
    model = _jitter(GraniteMoeHybridForCausalLM(cfg), seed, scale=0.1).eval()
    model.save_pretrained(directory)
    if with_tokenizer:
        tiny_tokenizer().save_pretrained(directory)
    return model


FALCON_H1_TINY = dict(hidden_size=32, num_attention_heads=2, num_key_value_heads=1, head_dim=8, intermediate_size=48,
                      mamba_d_ssm=48, mamba_n_heads=6, mamba_d_state=8, mamba_n_groups=1, mamba_chunk_size=4,
                      mamba_rms_norm=False, max_position_embeddings=1024, embedding_multiplier=2.5,
                      lm_head_multiplier=0.5, mlp_multipliers=[0.9, 0.6], key_multiplier=0.4,
                      attention_in_multiplier=1.1, attention_out_multiplier=0.9, ssm_in_multiplier=1.25,
                      ssm_out_multiplier=0.7, ssm_multipliers=[0.35, 0.25, 0.35, 0.5, 0.35])


def build_falcon_h1(directory: Path, *, seed=5, n_layer=2, vocab=72, with_tokenizer=True, **sizes):
    """A tiny Falcon-H1: attention and Mamba-2 side by side in every layer, every μP multiplier away from 1."""
    from transformers import FalconH1Config, FalconH1ForCausalLM

    torch.manual_seed(seed)
    cfg = FalconH1Config(**{**FALCON_H1_TINY, **sizes}, num_hidden_layers=n_layer, vocab_size=vocab,
                         bos_token_id=0, eos_token_id=0, pad_token_id=0)
    model = _jitter(FalconH1ForCausalLM(cfg), seed, scale=0.1).eval()
    model.save_pretrained(directory)
    if with_tokenizer:
        tiny_tokenizer().save_pretrained(directory)
    return model


NEMOTRON_H_TINY = dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=48,
                       mamba_num_heads=8, mamba_head_dim=8, ssm_state_size=8, n_groups=2, chunk_size=4,
                       n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                       moe_shared_expert_intermediate_size=24, max_position_embeddings=1024)


def build_nemotron_h(directory: Path, *, seed=6, pattern="M*-EM-", vocab=72, with_tokenizer=True, **sizes):
    """A tiny Nemotron-H: a layer of each kind, then a second Mamba-2 and MLP layer, as NVIDIA's
    hybrid_override_pattern spells them (M Mamba-2, * attention, - MLP, E mixture of experts)."""
    from transformers import NemotronHConfig, NemotronHForCausalLM

    torch.manual_seed(seed)
    cfg = NemotronHConfig(**{**NEMOTRON_H_TINY, **sizes}, hybrid_override_pattern=pattern, vocab_size=vocab,
                          bos_token_id=0, eos_token_id=0, pad_token_id=0)
    model = _jitter(NemotronHForCausalLM(cfg), seed, scale=0.1).eval()
    model.save_pretrained(directory)
    if with_tokenizer:
        tiny_tokenizer().save_pretrained(directory)
    return model


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    refs = {"gpt2": build_gpt2(root / "gpt2"), "mamba": build_mamba_hf(root / "mamba"),
            "mamba_ssm": build_mamba_ssm(root / "mamba_ssm"), "pythia": build_pythia(root / "pythia"),
            "mamba2": build_mamba2_hf(root / "mamba2"),
            "granite_hybrid": build_granite_hybrid(root / "granite_hybrid"),
            "falcon_h1": build_falcon_h1(root / "falcon_h1"), "nemotron_h": build_nemotron_h(root / "nemotron_h")}
    return {name: root / name for name in refs}, refs


@pytest.fixture(scope="session")
def tiny(tiny_dirs):
    """Loaded handles {"gpt2", "mamba", "mamba_ssm", "pythia", "mamba2", "granite_hybrid", "falcon_h1",
    "nemotron_h"} and
    the transformers models they came from."""
    from compare import load_model

    dirs, refs = tiny_dirs
    return {name: load_model(d, device="cpu") for name, d in dirs.items()}, refs


def shared_tokenizer(name: str):
    """A real tokenizer from ../shared/tokenizers, or skip the test with the reason."""
    from compare import load_tokenizer

    path = SHARED_TOKENIZERS / name
    if not path.is_dir():
        pytest.skip(f"real tokenizers not found at {SHARED_TOKENIZERS} (see shared/tokenizers/README.md)")
    return load_tokenizer(path)


@pytest.fixture(scope="module")
def tiny_sources(tiny_dirs):
    """The UI's model cache pointed at the tiny models (for the UI tests, by usefixtures)."""
    from ui import models

    dirs, _ = tiny_dirs
    models.configure(mamba=str(dirs["mamba"]), gpt2=str(dirs["gpt2"]))


@pytest.fixture(scope="module")
def real_vocab_models(tmp_path_factory):
    """Tiny random models over the real GPT-NeoX and GPT-2 vocabularies (skips without them)."""
    from compare import load_model

    neox, gpt2 = shared_tokenizer("gpt-neox-20b"), shared_tokenizer("gpt2")

    root = tmp_path_factory.mktemp("real_vocab")
    build_mamba_hf(root / "mamba", vocab=50280, with_tokenizer=False)
    build_gpt2(root / "gpt2", vocab=50257, with_tokenizer=False)
    return [load_model(root / "mamba", tokenizer=neox, device="cpu"),
            load_model(root / "gpt2", tokenizer=gpt2, device="cpu")]


@contextmanager
def one_thread():
    """The study's default threads=1, for the direct reference calls (the count changes rounding)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def rows_of(frame, key):
    """A study frame's rows of one task, without the study's own columns, to hold against a direct call."""
    columns = ["task", "prompt_index", "seed", "draws", "run_time_ids"]
    return frame[frame["task"] == key].drop(columns=columns, errors="ignore").reset_index(drop=True)
