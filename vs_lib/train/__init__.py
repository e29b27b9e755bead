"""Contrastive training of an encoder, from three sources of positives.

Each training example is a query image, one positive image and n − 1 negatives; the label
is the index of the positive among the n candidates, and the loss is the cross-entropy of
the softmax over similarities divided by a temperature.  The parts:

- :mod:`.losses` — the contrastive loss (:func:`contrastive_loss`) and its two batch forms;
- :mod:`.positives` — where positives come from: augmented views of the image itself or of
  a mined look-alike neighbour (``self_supervised``), another image of the same class
  (``labels``), an image a user clicked for the query (``clicks``);
- :mod:`.trainer` — the training loop as small steps (:func:`start_run`,
  :func:`make_batch`, :func:`embed_batch`, :func:`batch_loss`, :func:`train_step`,
  :func:`run_epoch`, checkpoints, :func:`finish`) and :func:`train_encoder`, which runs them;
- :mod:`.config` — :class:`TrainConfig` and the course's :func:`default_config`;
- :mod:`.registry` — where models live and :func:`ensure_model` (train only when missing or
  out of date: the reuse key is the configuration's hash joined with the training data's
  fingerprint, click log included);
- :mod:`.cli` — ``python -m vs_lib train``.

Training runs for a number of epochs (the learning rate warms up, then follows a cosine
schedule over the planned steps), seeded, on a fixed number of threads, so the same
configuration gives the same model on every run; a tqdm bar shows progress, the loss curve
is stored in the model's metadata, and a checkpoint is written every ``checkpoint_seconds``
so an interrupted run resumes where it stopped, exactly.
"""

from .cli import CLI_HELP, cli_add_arguments, cli_main
from .config import (
    BACKBONES,
    FULL_EPOCHS,
    LIGHT_AUGMENT,
    NEGATIVES,
    NEIGHBOUR_SOURCES,
    POSITIVES,
    SMOKE_EPOCHS,
    SMOKE_N_TRAIN,
    SSL_AUGMENT,
    STRONG_AUGMENT,
    TRAIN_THREADS,
    TrainConfig,
    TrainingError,
    default_config,
)
from .losses import both_views_loss, contrastive_loss, pair_loss, symmetric_loss
from .positives import (
    ClickLog,
    ClickPositives,
    LabelPositives,
    MiningReport,
    Pairs,
    PositiveSampler,
    ViewPositives,
    click_pairs_from_db,
    epoch_pairs,
    make_sampler,
    mine_neighbours,
    mine_training_neighbours,
    neighbour_features,
    pairs_fingerprint,
    pairs_in_order,
    read_click_log,
)
from .registry import ensure_model, evaluate_on_protocol, is_up_to_date, model_path, stored_reuse_key
from .trainer import (
    Checkpoints,
    LossRecord,
    Progress,
    TrainingData,
    TrainingRun,
    batch_loss,
    data_fingerprint,
    embed_batch,
    finish,
    log_loss,
    lr_factor,
    make_batch,
    resume,
    reuse_key,
    run_epoch,
    save_checkpoint,
    set_learning_rate,
    start_run,
    train_encoder,
    train_step,
    training_data,
    training_metadata,
)

__all__ = [
    "BACKBONES",
    "CLI_HELP",
    "FULL_EPOCHS",
    "LIGHT_AUGMENT",
    "NEGATIVES",
    "NEIGHBOUR_SOURCES",
    "POSITIVES",
    "SMOKE_EPOCHS",
    "SMOKE_N_TRAIN",
    "SSL_AUGMENT",
    "STRONG_AUGMENT",
    "TRAIN_THREADS",
    "Checkpoints",
    "ClickLog",
    "ClickPositives",
    "LabelPositives",
    "LossRecord",
    "MiningReport",
    "Pairs",
    "PositiveSampler",
    "Progress",
    "TrainConfig",
    "TrainingData",
    "TrainingError",
    "TrainingRun",
    "ViewPositives",
    "batch_loss",
    "both_views_loss",
    "cli_add_arguments",
    "cli_main",
    "click_pairs_from_db",
    "contrastive_loss",
    "data_fingerprint",
    "default_config",
    "embed_batch",
    "ensure_model",
    "epoch_pairs",
    "evaluate_on_protocol",
    "finish",
    "is_up_to_date",
    "log_loss",
    "lr_factor",
    "make_batch",
    "make_sampler",
    "mine_neighbours",
    "mine_training_neighbours",
    "model_path",
    "neighbour_features",
    "pair_loss",
    "pairs_fingerprint",
    "pairs_in_order",
    "read_click_log",
    "resume",
    "reuse_key",
    "run_epoch",
    "save_checkpoint",
    "set_learning_rate",
    "start_run",
    "stored_reuse_key",
    "symmetric_loss",
    "train_encoder",
    "train_step",
    "training_data",
    "training_metadata",
]
