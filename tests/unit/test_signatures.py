"""Each analysis' parameters are declared once (`analyses.signatures`): the function's keywords and
defaults are the signature's, and the API and a study's spec refuse a bad value with the same
words, the spec naming the entry's field."""
from __future__ import annotations

import inspect
import re

import pytest

from compare import study
from compare.analyses.attribution import attribution_patch
from compare.analyses.channels import channel_sensitivity
from compare.analyses.causal_trace import causal_trace
from compare.analyses.comparison import compare
from compare.analyses.hidden_attention import attention_map, head_pattern, hidden_attention
from compare.analyses.knockout import knockout
from compare.analyses.lens import logit_lens
from compare.analyses.noise import noise_sweep, noisy_logits
from compare.analyses.patching import patch_sweep
from compare.analyses.signatures import SIGNATURES, STUDIED
from compare.base.signature import REQUIRED
from compare.study import spec as study_spec

FUNCTIONS = {"compare": compare, "noise_sweep": noise_sweep, "channel_sensitivity": channel_sensitivity,
             "logit_lens": logit_lens, "attribution_patch": attribution_patch, "patch_sweep": patch_sweep,
             "causal_trace": causal_trace, "noisy_logits": noisy_logits, "knockout": knockout, "hidden_attention": hidden_attention,
             "head_pattern": head_pattern, "attention_map": attention_map}
PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_the_functions_keywords_and_defaults_are_the_signatures(name):
    keywords = inspect.signature(inspect.unwrap(FUNCTIONS[name])).parameters
    for param in SIGNATURES[name].params:
        if param.api:
            default = keywords[param.name].default
            assert (REQUIRED if default is inspect.Parameter.empty else default) == param.default, param.name
        else:
            assert param.name not in keywords, param.name


def test_the_study_takes_the_signatures_study_parameters():
    assert study_spec.ANALYSES == ("compare", "noise_sweep", "channel_sensitivity", "logit_lens", "attribution_patch")
    for sig in STUDIED:
        assert list(study_spec.PARAMS[sig.analysis]) == [p.name for p in sig.params if p.study]
        assert study_spec.REQUIRED[sig.analysis] == tuple(p.name for p in sig.params if p.study and p.required)


@pytest.mark.parametrize("name, field, value, words", [
    ("noise_sweep", "trials", 0, "must be an integer ≥ 1, got 0"),
    ("noise_sweep", "scale", "log", "'log' is not allowed; allowed values are absolute, relative"),
    ("noise_sweep", "distribution", "cauchy", "'cauchy' is not allowed; allowed values are gaussian, uniform"),
    ("channel_sensitivity", "level", -1.0, "must be a finite number ≥ 0, got -1.0"),
    ("compare", "variant", "best", "'best' is not allowed; allowed values are native, same_ids, aligned"),
])
def test_the_api_and_the_spec_refuse_alike(tiny, name, field, value, words):
    handle = tiny[0]["mamba"]
    needs = {"noise_sweep": dict(target=" Mary", levels=[0.5]),
             "channel_sensitivity": dict(target=" Mary", layer=0, level=0.5), "compare": {}}[name]
    with pytest.raises(ValueError) as api:
        FUNCTIONS[name](PROMPT, model=handle, **{**needs, field: value})
    assert str(api.value).endswith(f"{field}: {words}")
    entry = {"analysis": name, **{k: v for k, v in needs.items() if k != "levels"}, field: value}
    with pytest.raises(study.SpecError) as spec:
        study_spec.from_mapping({"prompts": [PROMPT], "models": ["m"], "analyses": [entry]})
    assert str(spec.value) == f"analyses[0].{field}: {words}"


@pytest.mark.parametrize("field,spec", [
    ("prompts[1]", {"prompts": ["ok", "a\ud800b"], "analyses": [{"analysis": "logit_lens"}]}),
    ("analyses[0].target", {"prompts": ["ok"], "analyses": [{"analysis": "logit_lens", "target": " M\udcff"}]}),
    ("analyses[0].track[0]", {"prompts": ["ok"], "analyses": [{"analysis": "compare", "track": ["\ud800"]}]}),
    ("models[0]", {"prompts": ["ok"], "models": ["./m\udcff"], "analyses": [{"analysis": "logit_lens"}]}),
])
def test_a_lone_surrogate_anywhere_in_a_spec_is_refused_naming_its_field(field, spec):
    """Such a str is not text: before this check a study failed writing its spec with a bare
    UnicodeEncodeError naming no field."""
    with pytest.raises(study_spec.SpecError, match=re.escape(field) + r": .* holds a lone surrogate U\+D[8C]"):
        study_spec.from_mapping({"models": ["m"], **spec})
