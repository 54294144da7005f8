"""The options of a training request, checked before any work is done.

A request's values arrive as JSON or as text from the command line (``--train-option KEY=VALUE``). Each
is read as the type of its default and kept within its range, so a wrong value is refused at once with
what was expected, not after a whole epoch (``val_interval=0`` divided by zero at the first validation)
or as a silent failure (``validation_clicks=0`` gave a NaN Dice and no version).
"""

from __future__ import annotations

import math
from typing import Any


class OptionError(ValueError):
    """A training option with a value the task cannot use."""


def checked_options(request: dict, defaults: dict, ranges: dict[str, tuple]) -> dict[str, Any]:
    """``defaults`` overlaid with the request's values for their keys, each converted to its default's
    type (int or float; text stays text) and checked against ``ranges[key]``: (lowest, highest) for a
    number, the words allowed for a text option that has an entry there."""
    options = dict(defaults)
    for key, default in defaults.items():
        if key not in request:
            continue
        value = request[key]
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            value = _number(key, value, integer=isinstance(default, int))
            lowest, highest = ranges.get(key, (-math.inf, math.inf))
            if not lowest <= value <= highest:
                bounds = f"at least {lowest:g}" if highest == math.inf else f"between {lowest:g} and {highest:g}"
                raise OptionError(f"Training option {key} must be {bounds}, not {value}")
        elif isinstance(default, str) and not isinstance(value, str):  # JSON of a /train request: 5, null, [...]
            raise OptionError(f"Training option {key} must be text (default {default!r}), not {value!r}")
        elif isinstance(default, str) and key in ranges and value not in ranges[key]:
            raise OptionError(f"Training option {key} must be one of {', '.join(ranges[key])}, not {value!r}")
        options[key] = value
    return options


def _number(key: str, value: Any, integer: bool) -> int | float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise OptionError(f"Training option {key} must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise OptionError(f"Training option {key} must be a finite number, not {value!r}")
    if integer:
        if not number.is_integer():
            raise OptionError(f"Training option {key} must be a whole number, not {value!r}")
        return int(number)
    return number
