"""`python -m ui space --out DIR`: the app as a ready Hugging Face Space repository.

How a Gradio Space builds: it installs `gradio==<sdk_version>` (from the README's front matter)
together with `requirements.txt`, before the repository's files are copied in, so that file
cannot install this package from its own folder; then it copies the repository and runs
`python app.py` in it. So the Space holds the package's source next to `app.py` (the script's
folder is first on `sys.path`) and `requirements.txt` lists the dependencies, torch pinned to
the CPU wheel (the default index's torch pulls several GB of CUDA libraries onto a CPU Space).
The repository root is laid out the same way (README front matter, `app.py`, `requirements.txt`),
so it is a Space as it stands; tests/browser/test_ui_space.py holds both to `REQUIREMENTS` and `APP`.
"""
from __future__ import annotations

import shutil
from pathlib import Path

PACKAGES = ("compare", "ui", "datasets_gen")
"""The source folders a Space needs next to app.py (the app imports all three)."""

TORCH = "2.13.0"
REQUIREMENTS = f"""\
# A Hugging Face Space installs these with gradio==<sdk_version> (README front matter), then runs app.py.
# torch from the CPU index: the default one's wheel pulls several GB of CUDA libraries.
--extra-index-url https://download.pytorch.org/whl/cpu
torch=={TORCH}
transformers>=5.0,<6
nnsight>=0.8,<0.9
datasets>=4.0
gradio>=6.0,<7
seaborn>=0.13
pandas>=2.0
pyarrow>=15
scipy>=1.11
tqdm>=4.66
"""
"""requirements.txt of a Space: pyproject's dependencies (tests/browser/test_ui_space.py holds them equal), torch pinned."""

APP = '''\
"""Hugging Face Space entry point: the Space runs `python app.py` (see ui/space.py).

`demo` is module-level so `gradio app.py` (reload mode) finds it. Set MAMBA_MODEL / GPT2_MODEL
in the Space settings to serve other checkpoints (an alias, a Hub id or a directory).
"""
from ui.app import build_app

demo = build_app()

if __name__ == "__main__":
    demo.launch()
'''


def front_matter(sdk_version: str) -> str:
    """The Space metadata a Space reads from the top of its README.md."""
    return f"""\
---
title: Mamba vs GPT-2
emoji: 🐍
colorFrom: green
colorTo: indigo
sdk: gradio
sdk_version: {sdk_version}
python_version: "3.11"
app_file: app.py
pinned: false
license: apache-2.0
short_description: Mamba-130m and GPT-2 small side by side (L, K, P, noise)
---
"""


def write(out: str | Path) -> Path:
    """Write the Space repository into `out` (a new or empty folder): README.md (front matter for
    the installed gradio, then ui/README.md), app.py, requirements.txt and the package source."""
    import gradio

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out must be a new or empty folder, got {str(out)!r}, which holds files")
    out.mkdir(parents=True, exist_ok=True)
    here = Path(__file__).resolve().parent
    (out / "README.md").write_text(front_matter(gradio.__version__) + "\n" + (here / "README.md").read_text())
    (out / "app.py").write_text(APP)
    (out / "requirements.txt").write_text(REQUIREMENTS)
    for name in PACKAGES:
        source = Path(__import__(name).__file__).resolve().parent
        shutil.copytree(source, out / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
    return out
