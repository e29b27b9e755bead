"""Online evaluation with simulated users: clicks, CTR, time spent, A/B tests, position bias.

Everything measured here is **synthetic**: the users are simulated, and every row they
log says so (``synthetic = 1``, ``source = 'simulation:<name>'``).  The parts, in the order
notebook 07 uses them:

- :mod:`.clicks` — the user model, a **position-based click model** (:class:`ClickModel`):
  a user examines position ``i`` with probability ``1 / i**eta``, clicks an examined result
  with a probability growing with its relevance grade 0–5 (the documented grade table
  :data:`vs_lib.metrics.FASHION_MNIST_GRADES` plays the human rater), then dwells for a
  log-normal time whose median grows with the grade;
- :mod:`.systems` — the system under test, :class:`ServiceSearch`: the serving facade's
  ``search_ids`` (the one search path, with its privacy, moderation and duplicate rules),
  kept fast by caches that cannot change an answer;
- :mod:`.simulate` — :func:`simulate`, the log of impressions and clicks;
- :mod:`.logstore` — where logs are kept: a simulated-interactions database of their own
  (:func:`simulation_db_path`, :func:`log_interactions`; never the platform database), and
  :func:`read_click_log`, the click pairs (and their fingerprint) that training reads;
- :mod:`.analysis` — online metrics (:func:`summarize`, :func:`daily`,
  :func:`ctr_by_position`) and position bias: :func:`estimate_propensity` from randomised
  sessions, :func:`click_relevance` corrected by inverse propensity weighting (IPW);
- :mod:`.abtest` — :func:`ab_test`: users split at random, the z-test and the user-level
  bootstrap of the CTR difference; :func:`aa_tests`, the check of that machinery; and
  :func:`sessions_needed`, the power calculation;
- :mod:`.cli` — ``python -m vs_lib simulate``.
"""

from .abtest import (
    AATests,
    ABResult,
    ABTest,
    aa_tests,
    ab_test,
    assign_users,
    bootstrap_ctr_difference,
    sessions_needed,
)
from .analysis import OnlineSummary, click_relevance, ctr_by_position, daily, estimate_propensity, summarize
from .cli import CLI_HELP, cli_add_arguments, cli_main
from .clicks import ClickModel, SimulationError
from .logstore import ClickLog, log_interactions, open_log, read_click_log, read_log, simulation_db_path
from .simulate import DAY, LOG_COLUMNS, SearchSystem, default_start_time, simulate
from .systems import CandidateCache, ServiceSearch, private_owners, visible_queries

__all__ = [
    "CLI_HELP",
    "DAY",
    "LOG_COLUMNS",
    "AATests",
    "ABResult",
    "ABTest",
    "CandidateCache",
    "ClickLog",
    "ClickModel",
    "OnlineSummary",
    "SearchSystem",
    "ServiceSearch",
    "SimulationError",
    "aa_tests",
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
    "open_log",
    "private_owners",
    "read_click_log",
    "read_log",
    "sessions_needed",
    "simulate",
    "simulation_db_path",
    "summarize",
    "visible_queries",
]
