"""Reproducible prompt suites for comparing Mamba, GPT-2 and Pythia, as Hugging Face datasets.

    from datasets_gen import build, save, align
    ds = build(seed=0, sizes={"natural": 64}, tokenizers={"mamba": "path/gpt-neox-20b",
                                                          "gpt2": "path/gpt2"})
    save(ds, "out/suites")                       # Arrow + Parquet + README.md, atomically

Command line: `python -m datasets_gen build --out DIR --seed 0 [--suites ...] [--size S=N]
[--tokenizer MODEL=PATH] [--text T] [--ids 1,2,3] [--overwrite] [--push-to-hub REPO]`.

Source tokenizer: every prompt is defined in one model's tokenizer, its `source` ("mamba" unless
the suite config says otherwise). Text suites (natural, custom texts) are encoded by it; ID suites
(monotone, periodic, repeated_random, custom ids) give IDs in it. `same_ids` and `aligned` of the
other model are derived from these source IDs; for the source model both equal the source IDs.

Row schema (one row per prompt, one split per suite; all columns always present):

| column                      | type        | meaning                                            |
|-----------------------------|-------------|----------------------------------------------------|
| suite, id                   | string      | split name; "<suite>-<5-digit index>"              |
| text                        | string      | the prompt text (source IDs decoded for ID suites) |
| source                      | string      | "mamba" or "gpt2", the tokenizer defining it       |
| target                      | string      | text of the expected next token; "" where none     |
| target_id_<m>               | int64       | target ID for model m; -1 where none/not 1 token   |
| <m>_<v>_ids                 | list<int64> | token IDs model m reads in variant v               |
| <m>_<v>_tokens              | list<string>| text of each of those tokens on its own            |
| <m>_aligned_split           | list<int64> | m's tokens per source token (1 = exact, 0 = ends   |
|                             |             | inside a character split over several tokens)      |
| <m>_aligned_flags           | list<bool>  | True where a source token has no single counterpart|
| <m>_flagged                 | bool        | any(<m>_aligned_flags)                             |
| flagged                     | bool        | mamba_flagged or gpt2_flagged                      |
| answer, wrong               | string      | " IO" and " S" (the name the prompt must not give) |
| corrupt_<k>                 | string      | the counterfactual prompt of kind k                |
| <m>_<k>_ids                 | list<int64> | corrupt_<k> tokenised by m, as long as             |
|                             |             | <m>_native_ids (its clean twin)                    |
| <m>_answer_id, <m>_wrong_id | int64       | the one token of answer, of wrong, for m           |
| params                      | string      | JSON: suite, config, seed, version, tokenizers,    |
|                             |             | identical                                          |

with m in `FAMILIES` ("mamba", "gpt2", "pythia") and v in ("native", "same_ids", "aligned"):
native = `text` tokenised by m; same_ids = the source IDs unchanged; aligned = each source
token's text encoded on its own by m, a character split over several source tokens kept whole
(see `align`). The counterfactual columns (answer … <m>_wrong_id) are filled in the natural
suite and null in the others; k in `counterfactuals.KINDS`: "abc" (a third name replaces the
repeated subject) and "name_swap" (the subject becomes the indirect object). A patching run takes
clean = <m>_native_ids, corrupt = <m>_<k>_ids, answer = <m>_answer_id, wrong = <m>_wrong_id.
Pythia reads Mamba's tokenizer (GPT-NeoX-20B), so its columns are copies of Mamba's, flagged in
`params` as ``"identical": {"pythia": "mamba"}`` (`IDENTICAL`); suites built before Pythia had
columns still work with `compare`, which reads Mamba's columns for a Pythia model where Pythia's
are absent.
"""

from compare.analyses.align import Alignment, align
from datasets_gen.build import VARIANTS, build, features
from datasets_gen.card import render_card
from datasets_gen.export import push_to_hub, save, write_parquet
from datasets_gen.suites import (
    DEFAULT_SUITES,
    SUITES,
    CustomConfig,
    MonotoneConfig,
    NaturalConfig,
    PeriodicConfig,
    Prompt,
    RepeatedRandomConfig,
)
from datasets_gen.tokenizers import DEFAULT_TOKENIZERS, FAMILIES, IDENTICAL, TOKENIZER_FAMILIES, Vocab, load_vocab

__all__ = [
    "Alignment", "CustomConfig", "DEFAULT_SUITES", "DEFAULT_TOKENIZERS", "FAMILIES", "IDENTICAL",
    "MonotoneConfig", "NaturalConfig", "PeriodicConfig", "Prompt", "RepeatedRandomConfig",
    "SUITES", "TOKENIZER_FAMILIES", "VARIANTS", "Vocab", "align", "build", "features", "load_vocab", "push_to_hub",
    "render_card", "save", "write_parquet",
]
