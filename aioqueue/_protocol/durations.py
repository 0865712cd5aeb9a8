"""Checks of the numbers a user gives: seconds (or timedeltas) and counts.

Every option is checked where it is given, so that a NaN, an infinity or a
negative delay fails the call that passed it with a ``ConfigurationError``
naming the option, and never reaches a worker. A worker runs the same checks
on the options it reads from Redis (an older or hostile producer may have
written anything there), and fails that one job with the same error.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from aioqueue.errors import ConfigurationError

__all__ = ["MAX_SECONDS", "aware_datetime", "count", "seconds"]

# about 300 years: longer is a mistake, and its milliseconds must still fit the wire
MAX_SECONDS = 1e10


def seconds(
    value: object,
    what: str,
    *,
    zero: bool = True,
    negative: bool = False,
    timedelta_ok: bool = True,
) -> float:
    """``value`` as a finite number of seconds, or a ConfigurationError about ``what``.

    zero: whether 0 is allowed; negative: whether values below 0 are (a
    ``result_ttl`` below 0 means "keep until deleted").
    """
    if timedelta_ok and isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        kinds = "a number of seconds or a timedelta" if timedelta_ok else "a number of seconds"
        raise ConfigurationError(f"{what} must be {kinds}, not {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        hint = "; a negative value keeps it until deleted" if negative else ""
        raise ConfigurationError(f"{what} must be a finite number of seconds, not {value}{hint}")
    if number < 0 and not negative:
        raise ConfigurationError(f"{what} must not be negative, not {value}")
    if number > MAX_SECONDS:
        raise ConfigurationError(f"{what} must be at most {MAX_SECONDS:.0e} seconds, not {value}")
    if number == 0 and not zero:
        raise ConfigurationError(f"{what} must be more than 0 seconds")
    return number


def count(value: object, what: str, *, least: int) -> int:
    """``value`` as an int of at least ``least``, or a ConfigurationError about ``what``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{what} must be a whole number, not {value!r}")
    if value < least:
        raise ConfigurationError(f"{what} must be at least {least}, not {value}")
    return value


def aware_datetime(value: object, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise ConfigurationError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigurationError(f"{what} must be a timezone-aware datetime")
    return value
