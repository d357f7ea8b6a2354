"""Turn suite configs into a `DatasetDict` with explicit `Features`, one split per suite.

Each `Prompt` (IDs in its source tokenizer) becomes one flat row holding every model × variant
(see the package docstring for the columns); a natural prompt's row also holds its patching
counterfactuals (`datasets_gen.counterfactuals`), null in the other suites' rows. The seed, the
suite config, the package version and the tokenizer names are stored in each row's `params`, so a
row says how to regenerate it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict, DatasetInfo, Features, List, Value
from tqdm.auto import tqdm

from compare.analyses.align import align
from compare.analyses.pairing import VARIANTS
from compare.base.store import package_version
from compare.handle.vocabularies import Vocab
from datasets_gen.counterfactuals import KINDS
from datasets_gen.suites import DEFAULT_SUITES, MAX_PROMPTS, SUITES, NaturalConfig, Prompt, count
from datasets_gen.tokenizers import FAMILIES, IDENTICAL, TOKENIZER_FAMILIES, load_vocabs

PACKAGE_VERSION = package_version()


def features() -> Features:
    """The row schema, fixed so that every build, suite and empty split has the same types."""
    columns: dict[str, Any] = {
        "suite": Value("string"), "id": Value("string"), "text": Value("string"),
        "source": Value("string"), "target": Value("string"),
    }
    for m in FAMILIES:
        columns[f"target_id_{m}"] = Value("int64")
    for m in FAMILIES:
        for v in VARIANTS:
            columns[f"{m}_{v}_ids"] = List(Value("int64"))
            columns[f"{m}_{v}_tokens"] = List(Value("string"))
        columns[f"{m}_aligned_split"] = List(Value("int64"))
        columns[f"{m}_aligned_flags"] = List(Value("bool"))
        columns[f"{m}_flagged"] = Value("bool")
    columns["flagged"] = Value("bool")
    columns["answer"], columns["wrong"] = Value("string"), Value("string")
    for kind in KINDS:
        columns[f"corrupt_{kind}"] = Value("string")
    for m in FAMILIES:
        for kind in KINDS:
            columns[f"{m}_{kind}_ids"] = List(Value("int64"))
        columns[f"{m}_answer_id"], columns[f"{m}_wrong_id"] = Value("int64"), Value("int64")
    columns["params"] = Value("string")
    return Features(columns)


def counterfactual_columns(pairs: list[dict] | None, models: Iterable[str]) -> dict[str, Any]:
    """The patching columns of one prompt from its `counterfactuals.pairs` (one per kind, in `KINDS`
    order), or all None for a prompt without (every suite but natural)."""
    out: dict[str, Any] = {"answer": None if pairs is None else pairs[0]["answer"],
                           "wrong": None if pairs is None else pairs[0]["wrong"]}
    by_kind = dict.fromkeys(KINDS) if pairs is None else {p["kind"]: p for p in pairs}
    for kind, pair in by_kind.items():
        out[f"corrupt_{kind}"] = None if pair is None else pair["corrupt"]
    for m in models:
        for kind, pair in by_kind.items():
            out[f"{m}_{kind}_ids"] = None if pair is None else pair[f"{m}_corrupt_ids"]
        for key in (f"{m}_answer_id", f"{m}_wrong_id"):
            out[key] = None if pairs is None else pairs[0][key]
    return out


def row(prompt: Prompt, vocabs: dict[str, Vocab], params: str, pairs: list[dict] | None = None) -> dict[str, Any]:
    """All variants of one prompt for every family (flat; see the package docstring), with its
    counterfactual `pairs` where it has them."""
    source = vocabs[prompt.source]
    ids = list(prompt.source_ids)
    out: dict[str, Any] = {
        "suite": prompt.suite, "id": prompt.id, "text": prompt.text, "source": prompt.source,
        "target": "" if prompt.target_id is None else source.decode([prompt.target_id]),
    }
    for m, vocab in vocabs.items():
        # The source model reads its own IDs: aligning them to themselves would only re-flag
        # byte fragments that are, for it, exact.
        if m == prompt.source:
            aligned = ids, [False] * len(ids), [[i] for i in ids]
            target_id = prompt.target_id
        else:
            aligned = align(ids, source, vocab)
            target_id = None
            if prompt.target_id is not None:
                t = align([prompt.target_id], source, vocab)
                target_id = None if t.flagged else t.ids[0]
        aligned_ids, flags, pieces = aligned
        out[f"target_id_{m}"] = -1 if target_id is None else target_id
        variants = {"native": vocab.encode(prompt.text), "same_ids": ids, "aligned": aligned_ids}
        for v, v_ids in variants.items():
            out[f"{m}_{v}_ids"] = list(v_ids)
            out[f"{m}_{v}_tokens"] = vocab.token_texts(list(v_ids))
        out[f"{m}_aligned_split"] = [len(p) for p in pieces]
        out[f"{m}_aligned_flags"] = list(flags)
        out[f"{m}_flagged"] = any(flags)
    out.update(counterfactual_columns(pairs, vocabs))
    for copy, family in IDENTICAL.items():  # the same tokenizer reads the prompt the same way
        for key in [k for k in out if k.startswith(f"{family}_") or k == f"target_id_{family}"]:
            out[key.replace(family, copy, 1)] = out[key]
    out["flagged"] = any(out[f"{m}_flagged"] for m in TOKENIZER_FAMILIES)
    out["params"] = params
    return out


def _configs(suites: Iterable[Any] | str | None, sizes: dict[str, int] | None) -> list[Any]:
    """Suite names or config objects → configs, with `sizes` applied; validated here."""
    if suites is None:
        suites = DEFAULT_SUITES
    elif isinstance(suites, str) or type(suites) in SUITES.values():
        suites = [suites]  # one suite; a name must not be read as its letters
    elif not isinstance(suites, Iterable):
        raise TypeError(f"suites: must be a list of names from {sorted(SUITES)} or config objects, "
                        f"got {type(suites).__name__} {suites!r}")
    configs = []
    for suite in suites:
        if isinstance(suite, str):
            if suite not in SUITES:
                raise ValueError(f"suites: unknown suite {suite!r}; allowed values are "
                                 f"{sorted(SUITES)} or a suite config object")
            suite = SUITES[suite]()
        elif type(suite) not in SUITES.values():
            raise TypeError(f"suites: {type(suite).__name__} is not a suite; allowed values "
                            f"are {sorted(SUITES)} or their config classes")
        configs.append(suite)
    if not configs:
        raise ValueError(f"suites: empty; allowed values are names from {sorted(SUITES)} or "
                         "config objects")
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"suites: {names} repeats a suite; each split appears once")
    if sizes is not None and not isinstance(sizes, Mapping):
        raise TypeError(f"sizes: must be a mapping of suite name → number of prompts, got "
                        f"{type(sizes).__name__} {sizes!r}")
    sizes = dict(sizes or {})
    # A custom suite's size is the number of prompts the user gave, so it cannot be set.
    sizable = set(names) - {"custom"}
    unknown = sorted(set(sizes) - sizable)
    if unknown:
        raise ValueError(f"sizes: cannot size {unknown}; allowed keys are {sorted(sizable)}")
    sizes = {suite: count(n, f"sizes[{suite!r}]", MAX_PROMPTS, "prompts per suite (MAX_PROMPTS)")
             for suite, n in sizes.items()}
    configs = [dataclasses.replace(c, n=sizes[c.name]) if c.name in sizes else c for c in configs]
    for config in configs:  # every field now, before the tokenizers load and the prompts generate
        config.check()
    return configs


def suite_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of suite `name`: `(seed, crc32(name))`, so adding a suite does not change the others."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def suite_params(config: Any, seed: int, vocabs: dict[str, Vocab]) -> dict[str, Any]:
    """Everything needed to regenerate a split: config, seed, version, tokenizers."""
    return {"suite": config.name, "config": dataclasses.asdict(config), "seed": seed,
            "version": PACKAGE_VERSION, "tokenizers": {m: v.origin for m, v in vocabs.items()},
            "identical": IDENTICAL}


def _plain(value: Any) -> Any:
    """A numpy scalar in a config (`n=np.int64(8)`) as the Python number JSON can store."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def build(*, seed: int = 0, suites: Iterable[Any] | None = None,
          sizes: dict[str, int] | None = None, tokenizers: dict[str, Any] | None = None,
          progress: bool = False) -> DatasetDict:
    """Build one split per suite.

    seed:       the only source of randomness, an integer ≥ 0 (numpy integers too, stored as an
                int); each suite draws from `(seed, crc32(name))`, so adding a suite does not
                change the others.
    suites:     names from `SUITES` or config objects, or a single one (default: `DEFAULT_SUITES`).
    sizes:      suite name → number of prompts (1..`MAX_PROMPTS`), overriding the config's `n`.
    tokenizers: a family of `TOKENIZER_FAMILIES` ("mamba", "gpt2") → tokenizer object, local
                path or Hub id (default `DEFAULT_TOKENIZERS`); Pythia's columns copy Mamba's
                (`IDENTICAL`).
    progress:   show a tqdm bar over prompts.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: must be an integer ≥ 0, got {seed!r}")
    seed = int(seed)
    configs = _configs(suites, sizes)
    vocabs = load_vocabs(tokenizers)
    schema = features()
    bar = tqdm(total=sum(c.n for c in configs), disable=not progress, unit="prompt")
    splits = {}
    for config in configs:
        params = suite_params(config, seed, vocabs)
        params_json = json.dumps(params, sort_keys=True, default=_plain)
        prompts = config.generate(vocabs, suite_rng(seed, config.name))
        pairs: list[list[dict] | None] = [None] * len(prompts)
        if isinstance(config, NaturalConfig):
            # A generator seeded as generate's gives the same prompts, then draws the third names.
            flat = config.counterfactuals(vocabs, suite_rng(seed, config.name))
            pairs = [flat[i:i + len(KINDS)] for i in range(0, len(flat), len(KINDS))]
            assert [group[0]["clean"] for group in pairs] == [prompt.text for prompt in prompts]
        rows = []
        for prompt, prompt_pairs in zip(prompts, pairs):
            rows.append(row(prompt, vocabs, params_json, prompt_pairs))
            bar.update()
        table = {k: [r[k] for r in rows] for k in schema}
        info = DatasetInfo(description=(type(config).__doc__ or "").strip(), features=schema)
        # A fingerprint from the parameters (not a random one) keeps save_to_disk's state.json
        # identical across runs too.
        fingerprint = hashlib.sha256(params_json.encode()).hexdigest()[:16]
        dataset = Dataset.from_dict(table, features=schema, info=info)
        splits[config.name] = Dataset(dataset.data, info=dataset.info, fingerprint=fingerprint)
    bar.close()
    return DatasetDict(splits)
