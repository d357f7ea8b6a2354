"""Input caps and the boundary between callbacks and the user.

A shared Space serves many people on a small CPU: each cap below keeps one request from holding
the queue for minutes, and its reason is part of the message, so a user learns why and what to
change. `shown_to_user` turns the package's own validation errors (ValueError, TypeError,
ModelLoadError — all written to be read) into `gr.Error`, so a bad input gives a readable modal
and the app keeps serving.
"""
from __future__ import annotations

import functools
import html
import inspect
import math
import re
from dataclasses import dataclass

import gradio as gr

from compare import ModelLoadError


@dataclass(frozen=True)
class Limits:
    prompt_tokens: int = 128
    text_chars: int = 4000
    sweep_forwards: int = 2400
    levels: int = 200
    trials: int = 20
    suite_prompts: int = 200
    channel_runs: int = 4800  # admits 3 trials on every channel of Mamba-130m's SSM points (1536 + 16)


LIMITS = Limits()
REASON = "so that one request cannot hold the shared queue for long; run the Python API for more"


class InputError(ValueError):
    """A user input the app refuses; the message names the field, the cap and the reason."""


def number(value: float | None, field: str, kind: type = int):
    """A `gr.Number`'s value as `kind`; a box the user cleared arrives as None."""
    if value is None:
        raise InputError(f"{field} is empty: type a number")
    return kind(value)


def check_text(text: str | None, field: str = "prompt") -> str:
    if text is None or not text.strip():
        raise InputError(f"{field} is empty: type some text (or pick an example)")
    if len(text) > LIMITS.text_chars:
        raise InputError(f"{field} has {len(text)} characters; the cap is {LIMITS.text_chars} {REASON}")
    return text


def check_tokens(n_tokens: int, model_name: str, field: str = "prompt") -> None:
    if n_tokens > LIMITS.prompt_tokens:
        raise InputError(f"{field} is {n_tokens} tokens for {model_name}; the cap is "
                         f"{LIMITS.prompt_tokens} tokens {REASON}")


def check_prompt(prompt: str | None, handles, field: str = "prompt") -> str:
    """Empty and over-long prompts are refused before any forward, with the cap's reason.

    handles: the models that will read the prompt (those picked on the tab), each counting its tokens.
    """
    prompt = check_text(prompt, field)
    for model in handles:
        check_tokens(len(model.encode(prompt)), model.name, field)
    return prompt


TOKEN_ID = re.compile(r"#(\d+)")
TARGET_HELP = "one token (mind the leading space, ' Mary'), or a token ID as #ID (#42)"


def token(text: str | None, field: str = "target") -> str | int:
    """A target box's value: '#42' is token ID 42, anything else the token's text (as typed)."""
    if text is None or not text.strip():
        raise InputError(f"{field} is empty: type {TARGET_HELP}")
    found = TOKEN_ID.fullmatch(text.strip())
    return int(found.group(1)) if found else text


def check_trials(trials: int) -> None:
    if not 1 <= trials <= LIMITS.trials:
        raise InputError(f"trials must be in 1..{LIMITS.trials}, got {trials}")


def check_sweep(n_layers: int, n_levels: int, trials: int) -> None:
    """Refuse sweeps whose forward count (layers × levels × trials) exceeds the cap."""
    check_trials(trials)
    if not 1 <= n_levels <= LIMITS.levels:
        raise InputError(f"levels must be in 1..{LIMITS.levels}, got {n_levels}")
    if n_layers < 1:
        raise InputError("layers: pick at least one layer")
    size = n_layers * n_levels * trials
    if size > LIMITS.sweep_forwards:
        raise InputError(f"sweep too large: {n_layers} layers × {n_levels} levels × {trials} trials "
                         f"= {size} noisy runs; the cap is {LIMITS.sweep_forwards} {REASON}")


def check_channels(n_channels: int, trials: int) -> None:
    """Refuse channel rankings whose run count (channels × trials) exceeds the cap."""
    check_trials(trials)
    size = n_channels * trials
    if size > LIMITS.channel_runs:
        raise InputError(f"channel ranking too large: {n_channels} channels × {trials} trials = {size} "
                         f"noisy runs; the cap is {LIMITS.channel_runs} {REASON}")


def check_levels(low: float, high: float) -> None:
    if not (math.isfinite(low) and math.isfinite(high)) or low < 0 or high < low:
        raise InputError(f"level range must satisfy 0 ≤ from ≤ to (finite), got {low}..{high}")


def check_suite_size(n: int) -> None:
    if not 1 <= n <= LIMITS.suite_prompts:
        raise InputError(f"prompts per suite must be in 1..{LIMITS.suite_prompts}, got {n}, {REASON}")


READABLE = (ValueError, TypeError, ModelLoadError)
"""The package's own validation errors: their messages are written for the user."""


def shown_to_user(fn):
    """Re-raise readable validation errors as `gr.Error` (a modal), keeping `fn`'s signature.

    Generator callbacks (those that stream partial results) get a generator wrapper: a plain one
    would return the generator unstarted and miss every error raised while it runs.
    """
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def streaming(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except READABLE as err:
                raise _modal(err) from err
        return streaming

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except READABLE as err:
            raise _modal(err) from err
    return wrapper


def _modal(err: Exception) -> gr.Error:
    # Messages quote tokens such as "<|endoftext|>", and gr.Error renders HTML: escape them.
    # Gradio 6's toast heads every error "Error" whatever its title, so the title also leads the
    # message, where the user sees it.
    title = ("Input refused" if isinstance(err, InputError)
             else "Model not available" if isinstance(err, ModelLoadError) else "Invalid input")
    # The engine's advice is for the API ("pass a token ID"); in the app an ID is typed as #ID.
    message = str(err).replace("or pass a token ID", "or type a token ID as #ID (#42)")
    return gr.Error(f"<strong>{title}</strong>: {code(message)}", title=title, print_exception=False)


def code(message: str) -> str:
    """`message` as toast HTML: escaped, its `code` spans as <code> (a toast shows no Markdown)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(message))
