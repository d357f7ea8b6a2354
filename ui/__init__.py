"""Gradio front end: the two models side by side, as a local app or a Hugging Face Space.

    python -m ui [--gpt2 SRC] [--mamba SRC] [--port N] [--host H]

or, from Python, `ui.app.build_app()` returns the `gr.Blocks`. Model sources default to the
real Hub checkpoints and can point at local directories (flags or MAMBA_MODEL / GPT2_MODEL).
"""


def _define_anyio_attributes() -> None:
    """Define anyio's typed-attribute classes before nnsight's `.save` mount breaks them.

    nnsight mounts `save` on every object (its CONFIG.APP.PYMOUNT); anyio refuses to create a
    `TypedAttributeSet` subclass with an unannotated public attribute, and the server imports
    those modules lazily, on the first request: every page would answer 500. Importing them
    here, once, settles them; if nnsight was imported first, lift its mount meanwhile.
    """
    import importlib

    # anyio.abc imports its submodules lazily, so name the ones that define the classes.
    modules = ("anyio.abc._sockets", "anyio.streams.file", "anyio.streams.tls",
               "anyio._core._sockets", "anyio._backends._asyncio")
    try:
        for name in modules:
            importlib.import_module(name)
    except TypeError:
        import nnsight
        from nnsight._c import mount, unmount

        unmount("save")
        try:
            for name in modules:
                importlib.import_module(name)
        finally:
            mount(nnsight.save, "save")


_define_anyio_attributes()
