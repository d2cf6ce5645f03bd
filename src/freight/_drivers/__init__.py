"""Drivers: own the clock, the tasks and the threads; decide nothing (the core does)."""
