"""Starting a local Ray node: retried when Ray's node does not come up, a clear error after that.

Ray itself is replaced by a stand-in here (no processes start), so these run everywhere."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

from vs_lib.scale import embedding  # noqa: E402


class FlakyInit:
    """``ray.init`` that fails ``failures`` times with Ray's start-up error, then succeeds."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[dict] = []
        self.shutdowns = 0

    def init(self, **kwargs: object) -> None:
        self.calls.append(kwargs)
        if len(self.calls) <= self.failures:
            raise Exception("The current node timed out during startup.")

    def shutdown(self) -> None:
        self.shutdowns += 1


@pytest.fixture
def flaky(monkeypatch):
    def make(failures: int) -> FlakyInit:
        fake = FlakyInit(failures)
        monkeypatch.setattr(ray, "is_initialized", lambda: False)
        monkeypatch.setattr(ray, "init", fake.init)
        monkeypatch.setattr(ray, "shutdown", fake.shutdown)
        monkeypatch.setattr(embedding.time, "sleep", lambda s: None)
        return fake

    return make


def test_a_node_that_comes_up_on_the_third_try_is_used(flaky):
    fake = flaky(failures=2)
    assert embedding._start_ray(2, None, attempts=3) is True
    assert len(fake.calls) == 3 and fake.shutdowns == 2  # each failed start is cleaned up
    assert all(c["num_cpus"] == 2 and c["include_dashboard"] is False for c in fake.calls)


def test_a_node_that_never_comes_up_is_a_clear_error(flaky):
    fake = flaky(failures=10)
    with pytest.raises(RuntimeError, match="could not start a local node in 3 attempts"):
        embedding._start_ray(2, None, attempts=3)
    assert len(fake.calls) == 3


def test_a_cluster_address_is_joined_once_without_retries(flaky):
    fake = flaky(failures=1)
    with pytest.raises(Exception, match="timed out"):
        embedding._start_ray(2, "ray://head:10001")
    assert fake.calls == [{"address": "ray://head:10001", "log_to_driver": False, "logging_level": 40}]


def test_a_running_ray_is_left_alone(monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "init", lambda **kw: pytest.fail("ray.init must not be called"))
    assert embedding._start_ray(2, None) is False
