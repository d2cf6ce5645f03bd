"""The pure core: decisions without I/O.

Nothing in this package reads a clock, sleeps, starts a thread or touches
asyncio. Time arrives as plain floats (``now``), randomness as plain floats in
``[0, 1)``. Drivers own the clock and the tasks and feed this package values.
"""
