"""Starting Ray for a job on this machine (or joining a cluster), and keeping Ray Data quiet.

``start_ray(num_cpus, address)`` starts a local node (retried: on a busy machine its processes
can miss Ray's own start-up deadline) or joins ``address``; ``quiet_ray_data()`` turns off Ray
Data's progress bars and info logs for the length of a job and restores them after.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

__all__ = ["quiet_ray_data", "start_ray"]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_ray_data() -> Iterator[None]:
    """No progress bars or info logs from Ray Data during the job (settings restored after)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    quiet = {"enable_progress_bars": False, "print_on_execution_start": False, "enable_operator_progress_bars": False}
    before = {attr: getattr(ctx, attr) for attr in quiet if hasattr(ctx, attr)}
    loggers = {name: logging.getLogger(name) for name in ("ray", "ray.data", "ray._private")}
    levels = {name: lg.level for name, lg in loggers.items()}
    try:
        for attr in before:
            setattr(ctx, attr, quiet[attr])
        for lg in loggers.values():
            lg.setLevel(logging.ERROR)
        yield
    finally:
        for attr, value in before.items():
            setattr(ctx, attr, value)
        for name, lg in loggers.items():
            lg.setLevel(levels[name])


def start_ray(num_cpus: int, address: str | None, attempts: int = 3) -> bool:
    """Start (or join) Ray unless it runs already; True when this call started it.

    Starting a local node launches several processes that must register within Ray's own 30 s;
    on a busy machine that can fail, so a local start is tried ``attempts`` times before a
    ``RuntimeError`` says what happened.
    """
    import ray

    if ray.is_initialized():
        return False
    if address is not None:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        return True
    for attempt in range(1, attempts + 1):
        try:
            ray.init(num_cpus=int(num_cpus), include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
            break
        except Exception as err:  # Ray raises a bare Exception when its node does not come up
            ray.shutdown()
            if attempt == attempts:
                raise RuntimeError(
                    f"Ray could not start a local node in {attempts} attempts ({err}); the machine may be overloaded"
                ) from err
            log.warning("Ray did not start (attempt %d of %d): %s; retrying", attempt, attempts, err)
            time.sleep(2.0 * attempt)
    return True
