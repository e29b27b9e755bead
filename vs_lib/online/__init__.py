"""Online evaluation with simulated users: clicks, CTR, time spent, A/B tests, position bias.

Everything measured here is **synthetic**: the users are simulated, and every row they
log says so (``synthetic = 1``, ``source = 'simulation:<name>'``).  The parts, in the order
notebook 07 uses them:

- :mod:`.clicks` — the user model, a **position-based click model** (:class:`ClickModel`):
  a user examines position ``i`` with probability ``1 / i**eta``, clicks an examined result
  with a probability growing with its relevance grade 0–5 (the documented grade table
  :data:`vs_lib.metrics.FASHION_MNIST_GRADES` plays the human rater), then dwells for a
  log-normal time whose median grows with the grade;
- :mod:`.simulate` — systems under test (:class:`SearchSystem`, :class:`EmbeddingSearch`),
  :func:`simulate` (the log of impressions and clicks) and :func:`log_interactions` (into
  the ``interactions`` table);
- :mod:`.analysis` — online metrics (:func:`summarize`, :func:`daily`,
  :func:`ctr_by_position`) and position bias: :func:`estimate_propensity` from randomised
  sessions, :func:`click_relevance` corrected by inverse propensity weighting (IPW);
- :mod:`.abtest` — :func:`ab_test`: users split at random, the z-test and the user-level
  bootstrap of the CTR difference, and :func:`sessions_needed`, the power calculation;
- :mod:`.cli` — ``python -m vs_lib simulate``.

The logged clicks are what ``train`` reads as click positives (``type = 'click'`` rows:
``query_image_id → displayed_image_id``).  Queries are drawn from the **training** images by
default so that training on clicks never sees a test image.
"""

from .abtest import ABResult, ABTest, ab_test, assign_users, bootstrap_ctr_difference, sessions_needed
from .analysis import OnlineSummary, click_relevance, ctr_by_position, daily, estimate_propensity, summarize
from .cli import CLI_HELP, cli_add_arguments, cli_main
from .clicks import ClickModel, SimulationError
from .simulate import DAY, LOG_COLUMNS, EmbeddingSearch, SearchSystem, default_start_time, log_interactions, simulate

__all__ = [
    "CLI_HELP",
    "DAY",
    "LOG_COLUMNS",
    "ABResult",
    "ABTest",
    "ClickModel",
    "EmbeddingSearch",
    "OnlineSummary",
    "SearchSystem",
    "SimulationError",
    "ab_test",
    "assign_users",
    "bootstrap_ctr_difference",
    "cli_add_arguments",
    "cli_main",
    "click_relevance",
    "ctr_by_position",
    "daily",
    "default_start_time",
    "estimate_propensity",
    "log_interactions",
    "sessions_needed",
    "simulate",
    "summarize",
]
