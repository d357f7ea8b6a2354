"""Pure figures: a shared toolkit (`base`) and one module per analysis.

Imports the layers below."""
