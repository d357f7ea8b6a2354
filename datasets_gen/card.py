"""The dataset card, rendered from `card_template.md` and the parameters stored in the data.

The card reads the seed and configs back from each split's `params` column rather than from the
build call, so a card can never describe a different dataset from the one it ships with.
"""

from __future__ import annotations

import json
from pathlib import Path
from string import Template

from datasets import DatasetDict

from datasets_gen.suites import SUITES

TEMPLATE = Path(__file__).with_name("card_template.md")
COLUMNS = """- `suite`, `id`, `text`, `source` (the model whose tokenizer defines the prompt), `target`
  (the expected next token's text, empty where none).
- `target_id_<model>`: the target's ID for that model, -1 where none or not one token.
- `<model>_<variant>_ids`, `<model>_<variant>_tokens`: for model `mamba`/`gpt2`/`pythia` and
  variant `native`/`same_ids`/`aligned`, the token IDs and each token's text. Pythia reads
  Mamba's tokenizer (GPT-NeoX-20B): its columns are copies of Mamba's (`identical` in `params`).
- `<model>_aligned_split`: target tokens per source token; `<model>_aligned_flags`: True where
  that is not exactly one; `<model>_flagged`, `flagged`: any flag for that model, for either.
- `answer`, `wrong`, `corrupt_abc`, `corrupt_name_swap`: natural suite only (null elsewhere), the
  counterfactuals for activation patching (IOI, Wang et al. 2022): `answer` is the indirect object
  (" Mary"), `wrong` the subject (" John"); `corrupt_abc` puts a third name at the repeated
  subject, `corrupt_name_swap` the indirect object.
- `<model>_abc_ids`, `<model>_name_swap_ids`: the corrupt prompts tokenised by that model, each as
  long as `<model>_native_ids` (the clean prompt) and different only at the repeated subject;
  `<model>_answer_id`, `<model>_wrong_id`: the one token of `answer` and `wrong` (every name is one
  token in every tokenizer). Null outside the natural suite. A patching run for a model takes
  clean `<model>_native_ids`, corrupt `<model>_abc_ids` (or `_name_swap_ids`) and the two IDs, e.g.
  `compare.patch_sweep(row["gpt2_native_ids"], row["gpt2_abc_ids"], model=...,
  answer=row["gpt2_answer_id"], wrong=row["gpt2_wrong_id"], component="resid_post")`.
- `params`: JSON of the generation parameters (suite config, seed, version, tokenizers, and
  `identical`: the families whose columns copy another's)."""


def parquet_name(split: str) -> str:
    """File name of a split's Parquet shard, in the layout the Hub reads splits from."""
    return f"{split}-00000-of-00001.parquet"


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M"


def command(params: dict[str, dict]) -> str:
    """The CLI call that rebuilds suites given by name; custom suites live only in `params`."""
    first = next(iter(params.values()))
    sizes = " ".join(f"--size {s}={p['config']['n']}" for s, p in params.items() if s != "custom")
    tokenizers = " ".join(f"--tokenizer {m}={t}" for m, t in first["tokenizers"].items())
    return (f"python -m datasets_gen build --out OUT --seed {first['seed']} "
            f"--suites {' '.join(params)} {sizes} {tokenizers}")


def render_card(dataset: DatasetDict) -> str:
    """Markdown with YAML front matter for `dataset` (every split must have rows)."""
    params = {split: json.loads(ds[0]["params"]) for split, ds in dataset.items()}
    first = next(iter(params.values()))
    rows = "\n".join(
        f"| {split} | {ds.num_rows} | {' '.join((SUITES[split].__doc__ or '').split())} |"
        for split, ds in dataset.items())
    data_files = "\n".join(f"  - split: {split}\n    path: data/{parquet_name(split)}"
                           for split in dataset)
    return Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        size_category=_size_category(sum(ds.num_rows for ds in dataset.values())),
        data_files=data_files, suite_rows=rows, columns=COLUMNS, version=first["version"],
        seed=first["seed"], params=json.dumps(params, indent=2, sort_keys=True),
        command=command(params))
