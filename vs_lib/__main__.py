"""Command line: ``python -m vs_lib <command> ...``.

Each command lives in the module of its pipeline stage, which defines
``CLI_HELP`` (one line), ``cli_add_arguments(parser)`` and ``cli_main(args) -> int``.
Modules are imported only when their command is built, so ``--help`` stays quick to read
and one stage's heavy imports never slow another's.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, one-line help shown even before the module is imported)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("vs_lib.data", "ensure the Fashion-MNIST corpus and the platform database; print sources and row counts"),
    "train": ("vs_lib.train", "train a contrastive encoder (positives: self_supervised, labels, clicks)"),
    "index": (
        "vs_lib.index",
        "embed every image not yet indexed and add it to the vector index (removes deleted images)",
    ),
    "evaluate": ("vs_lib.evaluate", "offline evaluation of saved encoders on the test set"),
    "simulate": ("vs_lib.online", "simulate users: log impressions and clicks, compare two systems (A/B)"),
    "serve": ("vs_lib.api", "run the HTTP search service and web page"),
    "user": ("vs_lib.auth", "make (token), list and revoke the credentials of platform users; set a sign-in password"),
    "embed": ("vs_lib.scale", "embed the corpus in-process or as a Ray Data job, to Parquet"),
    "report": ("vs_lib.report", "execute every notebook with papermill into reports/ (executed .ipynb and HTML)"),
    # a folder of your own images (vs_lib.collection); `index --folder DIR` indexes one
    "search": ("vs_lib.collection.search", "search a collection (a folder of your own images) by image or crop"),
    "dedup": (
        "vs_lib.collection.dedup",
        "list exact and near-duplicate images of a folder (indexes it first, incrementally)",
    ),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="python -m vs_lib",
        description="vs_lib: the visual search course's library, from the command line.",
    )
    parser.add_argument("--version", action="version", version=f"vs_lib {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="command")
    for name, (module_name, help_text) in COMMANDS.items():
        if name != only:  # the overview needs one line per command, not its module
            sub.add_parser(name, help=help_text, add_help=False)
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            continue  # stage not part of this version
        p = sub.add_parser(
            name, help=getattr(module, "CLI_HELP", help_text), description=getattr(module, "CLI_HELP", help_text)
        )
        module.cli_add_arguments(p)
        p.set_defaults(_main=module.cli_main)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; files already written are complete, partial ones were discarded", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
