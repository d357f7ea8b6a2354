"""Hugging Face Space entry point (see ui/README.md for the Space metadata).

The Space runs `python app.py`; `demo` is module-level so `gradio app.py` (reload mode) finds it.
"""
from ui.app import build_app

demo = build_app()

if __name__ == "__main__":
    demo.launch()
