"""Hugging Face Space entry point: the Space runs `python app.py` (see ui/space.py).

`demo` is module-level so `gradio app.py` (reload mode) finds it. Set MAMBA_MODEL / GPT2_MODEL
in the Space settings to serve other checkpoints (an alias, a Hub id or a directory).
"""
from ui.app import build_app

demo = build_app()

if __name__ == "__main__":
    demo.launch()
