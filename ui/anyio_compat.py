"""Import order fix between nnsight and anyio, for the server only (Gradio, FastAPI, httpx).

nnsight mounts `save` on every Python object (its CONFIG.APP.PYMOUNT, nnsight/_c); anyio refuses
to create a `TypedAttributeSet` subclass with an unannotated public attribute (upstream:
anyio/_core/_typedattr.py, `TypedAttributeSet.__init_subclass__`), and servers import those anyio
modules lazily, on the first request — so a Gradio app importing `compare` answered 500 to every
page. Defining those classes once settles them. Only a server meets this, so `ui.app` calls it
where the app is built, not `import compare`.
"""


def define_anyio_attributes() -> None:
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
