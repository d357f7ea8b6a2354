"""Gradio front end: the two models side by side, as a local app or a Hugging Face Space.

    python -m ui [--gpt2 SRC] [--mamba SRC] [--port N] [--host H]

or, from Python, `ui.app.build_app()` returns the `gr.Blocks`. Model sources default to the
real Hub checkpoints and can point at local directories (flags or MAMBA_MODEL / GPT2_MODEL).
"""
