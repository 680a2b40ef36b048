"""Click parameter types shared by the commands."""

from __future__ import annotations

import math

import click

MAX_VALUES = 10_000
"""The most values a range may expand to (a tiny step would otherwise plan billions of cells)."""


class RangeParam(click.ParamType):
    """``START:STOP[:STEP]`` (both ends included) or a comma list, as a tuple of positive floats.

    The step defaults to the command's ``--step`` (0.25). Empty, reversed, non-numeric and
    non-positive ranges are usage errors naming the option.
    """

    name = "range"

    def __init__(self, default_step: float = 0.25):
        self.default_step = default_step

    def step(self, ctx: click.Context | None) -> float:
        """The ``--step`` given on the command line (an eager option), else the default."""
        step = ctx.meta.get(STEP_KEY) if ctx is not None else None
        return self.default_step if step is None else step

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        try:
            if ":" in text:
                parts = text.split(":")
                if len(parts) not in (2, 3) or not all(p.strip() for p in parts):
                    raise ValueError
                start, stop = float(parts[0]), float(parts[1])
                step = float(parts[2]) if len(parts) == 3 else self.step(ctx)
                values = self.expand(start, stop, step)
            else:
                items = [p.strip() for p in text.split(",")]
                if not all(items):
                    raise ValueError
                values = tuple(float(p) for p in items)
        except ValueError:
            self.fail(f"{value!r} is not START:STOP[:STEP] or a comma list of numbers", param, ctx)
        except _RangeError as e:
            self.fail(f"{value!r}: {e}", param, ctx)
        if not values:
            self.fail("the range is empty", param, ctx)
        if not all(math.isfinite(v) and v > 0 for v in values):
            self.fail(f"{value!r}: values must be positive numbers", param, ctx)
        return values

    @staticmethod
    def expand(start: float, stop: float, step: float) -> tuple[float, ...]:
        """start, start+step, ..., stop (inclusive, within rounding)."""
        if not all(math.isfinite(v) for v in (start, stop, step)):
            raise _RangeError("bounds and step must be finite")
        if step <= 0:
            raise _RangeError("the step must be positive")
        if stop < start:
            raise _RangeError("the range is reversed (STOP < START)")
        count = (stop - start) / step + 1e-9
        if count + 1 > MAX_VALUES:
            raise _RangeError(f"the step gives {math.floor(count) + 1:,.0f} values, more than {MAX_VALUES:,}; "
                              "use a larger step")
        n = int(math.floor(count)) + 1
        return tuple(round(start + i * step, 10) for i in range(n))


class _RangeError(Exception):
    pass


STEP_KEY = "biorules.range_step"


def step_callback(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """``--step`` (eager, so it is known when ``--gain START:STOP`` is expanded) must be positive."""
    if value is not None:
        if not value > 0:
            raise click.BadParameter("must be positive", ctx=ctx, param=param)
        ctx.meta[STEP_KEY] = value
    return value


class Finite(click.FloatRange):
    """A float in an optional range that must be finite: ``nan`` and ``inf`` are usage errors."""

    name = "float"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)

    def _describe_range(self) -> str:
        return super()._describe_range() if (self.min is not None or self.max is not None) else "finite"
