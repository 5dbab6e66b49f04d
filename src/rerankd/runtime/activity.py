"""Served work per device, shared by the schedulers of every model on it, so optional work (shadow scoring) on one
model waits while another model on the same device has requests to serve.

Each model has its own :class:`~rerankd.runtime.scheduler.Scheduler` and forward thread. Without a shared view,
a shadow model's scheduler sees only its own (optional) queue and runs at once, splitting the device's cores or
streams with the served model. With it, optional work starts only after the device has had no served work for
``quiet_s`` (a closed-loop client sends its next request within a few ms of the last answer, so a gap shorter
than that is not idle capacity).
"""

from __future__ import annotations

import asyncio
import time

DEFAULT_QUIET_S = 0.05


class DeviceActivity:
    """Counts served (not sheddable) requests queued or running on one device and when the last one ended."""

    def __init__(self, quiet_s: float = DEFAULT_QUIET_S) -> None:
        self.quiet_s = quiet_s
        self._busy = 0
        self._last = float("-inf")

    @property
    def busy(self) -> int:
        return self._busy

    def enter(self) -> None:
        self._busy += 1
        self._last = time.monotonic()

    def leave(self) -> None:
        self._busy = max(0, self._busy - 1)
        self._last = time.monotonic()

    def quiet_for(self) -> float:
        """Seconds still to wait before the device counts as idle (0 when it is)."""
        if self._busy:
            return self.quiet_s
        return max(0.0, self._last + self.quiet_s - time.monotonic())

    async def wait_quiet(self) -> None:
        """Return once no served request has been queued or running for ``quiet_s``."""
        while (remaining := self.quiet_for()) > 0:
            await asyncio.sleep(remaining)


class DeviceActivities:
    """One :class:`DeviceActivity` per device name (``cpu``, ``cuda:0``, ...)."""

    def __init__(self, quiet_s: float = DEFAULT_QUIET_S) -> None:
        self.quiet_s = quiet_s
        self._by_device: dict[str, DeviceActivity] = {}

    def get(self, device: str) -> DeviceActivity:
        if device not in self._by_device:
            self._by_device[device] = DeviceActivity(self.quiet_s)
        return self._by_device[device]
