"""Progress reporting for long evaluation steps, as plain callbacks (the library never draws anything).

A :data:`StageProgress` is called with ``(stage, completed, total)``; front ends map each stage label to a
progress bar. :func:`stage_counter` adapts it to the ``progress(n_done_in_batch)`` callbacks that
:class:`rerankd.Reranker` methods take.
"""

from __future__ import annotations

from collections.abc import Callable

StageProgress = Callable[[str, int, int], None]
BatchProgress = Callable[[int], None]


def stage_counter(progress: StageProgress | None, stage: str, total: int) -> BatchProgress | None:
    """A counter that reports ``stage`` as done/total each time it is advanced; None when no one listens.

    Reports ``(stage, 0, total)`` at once so the stage shows up before its first item finishes.
    """
    if progress is None:
        return None
    done = 0
    progress(stage, 0, total)

    def advance(amount: int) -> None:
        nonlocal done
        done = min(total, done + amount)
        progress(stage, done, total)

    return advance
