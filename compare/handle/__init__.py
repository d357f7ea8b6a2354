"""A loaded model (`Model`), its loading, tokenizer, vocabularies, isolation and points.

Imports `base`, `ssm`, `families`."""
