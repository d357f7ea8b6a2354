"""`plain`: a value as standard JSON can hold it (the reports and the saved results write it)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def plain(value: Any) -> Any:
    """`value` with numpy scalars/arrays as Python values and non-finite floats as strings ("nan",
    "inf"), so the JSON is standard (json.dumps would write NaN, which JSON does not allow)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
