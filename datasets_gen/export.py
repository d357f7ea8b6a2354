"""Write a built `DatasetDict` to disk atomically, as Arrow and Parquet, and push it to the Hub.

Layout of a saved build (`OUT/`):
    dataset_dict.json, <split>/...     `save_to_disk`, so `datasets.load_from_disk(OUT)` works
    data/<split>-00000-of-00001.parquet one file per split, the layout the Hub reads
    README.md                          the dataset card (`datasets_gen.card`)
    .mamba-gpt2-compare.json           the marker that lets a later --overwrite replace it

`compare.base.store` publishes the folder: an interrupted build leaves either the old dataset or none,
never half of one, and overwrite=True replaces only a previous build, never other files.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from datasets import DatasetDict

from compare.base.store import check, publish, recover
from datasets_gen.card import parquet_name, render_card

KIND = "prompt suites"


def write_parquet(dataset: DatasetDict, folder: Path) -> list[Path]:
    """One Parquet file per split, byte-identical for identical rows.

    pyarrow writes no timestamps; the schema metadata carries the `Features`, so
    `Dataset.from_parquet` restores the exact types.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, ds in dataset.items():
        path = folder / parquet_name(split)
        pq.write_table(ds.data.table, path, compression="zstd")
        paths.append(path)
    return paths


def check_out(out: str | Path, *, overwrite: bool) -> Path:
    """`out` as a Path; raises if `save` may not write there (checked before building)."""
    return check(out, kind=KIND, overwrite=overwrite, argument="out")


def save(dataset: DatasetDict, out: str | Path, *, overwrite: bool = False) -> Path:
    """Save `dataset` to `out` (layout in the module docstring); returns `out`."""
    def write(folder: Path) -> None:
        dataset.save_to_disk(str(folder))
        write_parquet(dataset, folder / "data")
        (folder / "README.md").write_text(render_card(dataset), encoding="utf-8")

    return publish(out, write, kind=KIND, overwrite=overwrite, argument="out")


def push_to_hub(out: str | Path, repo_id: str, *, token: str | None = None,
                private: bool = False) -> str:
    """Upload a saved build's card and Parquet files to the dataset repo `repo_id`.

    Pushing the files `save` wrote (not a fresh export) means the Hub holds the same bytes that
    were checked locally. Returns the repo URL.
    """
    out = Path(out)
    recover(out)  # a build whose replacement was killed midway is put back first
    if not (out / "README.md").is_file() or not (out / "data").is_dir():
        raise ValueError(f"out: {out} is not a saved build; allowed values are folders "
                         "written by datasets_gen.save or `python -m datasets_gen build`")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo_id: {repo_id!r} is not a Hub repo id; allowed values look "
                         "like 'owner/name'")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=str(out),
                          allow_patterns=["README.md", "data/*.parquet"])
    # The Hub client raises its HTTP library's transport errors (not OSError subclasses),
    # OSError for offline mode and missing tokens, and HfHubHTTPError: all mean "not uploaded".
    except Exception as err:
        raise RuntimeError(
            f"push_to_hub: could not upload {out} to {repo_id} ({type(err).__name__}: {err}). "
            "The Hub is unreachable or you are not logged in (`hf auth login`); the build on "
            f"disk is complete, push it later with `python -m datasets_gen push {out} {repo_id}`."
        ) from err
    return str(url)
