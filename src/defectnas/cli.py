"""The ``defectnas`` command line (see CONTRACT.md for the stable surface).

Why argparse and one function per command: each command is a few lines that parse flags into
the library's own calls, so everything the CLI does is also available from Python. Errors meant
for the user (:class:`~defectnas.errors.DefectnasError`) print as one line and exit with 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ConfigError, DefectnasError


# ----------------------------------------------------------------- shared flags
def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars or progress messages")
    p.add_argument("--seed", type=int, default=0, help="random seed (splits, initialisation, batch order)")


def _add_data_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--data", required=required, help="table of query–product pairs (CSV/TSV/JSONL/Parquet, .gz/.zip), or an ESCI/WANDS folder")
    g = p.add_argument_group("data layout (for tables that are not a known dataset)")
    g.add_argument("--format", default="auto", help="auto, esci, wands, homedepot, crowdflower, pairs or table")
    g.add_argument("--query-col", help="column holding the query")
    g.add_argument("--title-col", help="column holding the product title")
    g.add_argument("--label-col", help="column holding the label")
    g.add_argument("--defect-labels", help="comma-separated label values that mean defect, e.g. I,Irrelevant")
    g.add_argument("--defect-below", type=float, help="numeric scores below this are defects")


def _load_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"format": args.format, "query_col": args.query_col, "title_col": args.title_col, "label_col": args.label_col,
            "defect_labels": args.defect_labels, "defect_below": args.defect_below}


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="JSON file of options (flat, or {\"model\": {...}, \"train\": {...}}); flags override it")
    p.add_argument("--epochs", type=int, help="maximum classification epochs")
    p.add_argument("--batch-size", type=int, help="pairs per step")
    p.add_argument("--lr", type=float, help="Adam learning rate")
    p.add_argument("--defect-weight", type=float, help="cross-entropy weight of defects (default 10)")
    p.add_argument("--alpha", type=float, help="weight of cross-entropy in the joint loss")
    p.add_argument("--beta", type=float, help="weight of the triplet loss in the joint loss")
    p.add_argument("--embedding-init", choices=["trained", "minilm"], help="token vocabulary: trained on the data, or all-MiniLM-L6-v2's")
    p.add_argument("--pretrained-model", help="with --embedding-init minilm: a local path or hub name instead of the bundled MiniLM")
    p.add_argument("--matching", action="store_true", default=None, help="add the multi-perspective matching layer")
    p.add_argument("--threads", type=int, dest="num_threads", help="torch CPU threads")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda")


_MODEL_FLAGS = ("epochs", "batch_size", "lr", "defect_weight", "alpha", "beta", "embedding_init", "pretrained_model", "matching", "num_threads", "device")


def _options(args: argparse.Namespace) -> dict[str, Any]:
    from .config import load_options_file

    options = load_options_file(args.config) if getattr(args, "config", None) else {}
    options.update({k: getattr(args, k) for k in _MODEL_FLAGS if getattr(args, k, None) is not None})
    if getattr(args, "variant", None):
        options["variant"] = args.variant
    options["seed"] = args.seed
    return options


def _echo(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(message, file=sys.stderr)


# ------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> None:
    from . import DefectClassifier
    from .data import load_pairs, split_by_query
    from .storage import atomic_write_json

    df = load_pairs(args.data, **_load_kwargs(args))
    parts = split_by_query(df, valid_frac=0.1, test_frac=args.test_frac, seed=args.seed)
    held_out = parts["test"] if len(parts["test"]) else parts["valid"]
    _echo(args, f"{args.data}: train {len(parts['train'])}, valid {len(parts['valid'])}, test {len(parts['test'])} pairs (split by query)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clf = DefectClassifier(**_options(args))
    clf.fit(parts["train"], parts["valid"], checkpoint_dir=out, resume=args.resume, quiet=args.quiet, log=lambda m: _echo(args, m))
    clf.save(out)
    metrics = clf.evaluate(held_out)
    atomic_write_json(out / "metrics.json", metrics)
    if not args.keep_checkpoint:
        (out / "checkpoint.safetensors").unlink(missing_ok=True)
    _echo(args, f"model saved to {out}; metrics on {'test' if len(parts['test']) else 'validation'} queries:")
    print(json.dumps(metrics, indent=2))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from . import DefectClassifier
    from .data import load_pairs
    from .storage import atomic_write_json

    clf = DefectClassifier.load(args.model)
    metrics = clf.evaluate(load_pairs(args.data, require_both_classes=False, **_load_kwargs(args)))
    if args.json:
        atomic_write_json(args.json, metrics)
    print(json.dumps(metrics, indent=2))


def cmd_predict(args: argparse.Namespace) -> None:
    from . import DefectClassifier
    from .data import load_pairs
    from .data.writers import write_table

    clf = DefectClassifier.load(args.model)
    df = load_pairs(args.data, labels=False, require_both_classes=False, **_load_kwargs(args))
    probs = clf.predict_proba(df)
    df["defect_probability"] = probs
    df["is_defect"] = probs >= clf.threshold_
    write_table(df, args.out)
    _echo(args, f"{len(df)} pairs scored, {int(df['is_defect'].sum())} flagged as defects → {args.out}")


def cmd_quickstart(args: argparse.Namespace) -> None:
    from .quickstart import resolve_data, run_quickstart

    data = resolve_data(args.data, ask=input)
    run_quickstart(data, args.out, _options(args), seed=args.seed, quiet=args.quiet, load_kwargs=_load_kwargs(args),
                   echo=lambda m: _echo(args, m))


def cmd_data(args: argparse.Namespace) -> None:
    from .data import describe, format_description, load_pairs

    df = load_pairs(args.path, labels=not args.no_labels, require_both_classes=False, **_load_kwargs(args))
    print(format_description(describe(df)))


def cmd_download(args: argparse.Namespace) -> None:
    from .data import download

    paths = download(args.name, args.out, base_url=args.base_url, quiet=args.quiet)
    for p in paths:
        print(p)


# --------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="defectnas", description="Find search defects: products shown for a query that are not relevant to it.")
    parser.add_argument("--version", action="version", version=f"defectnas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a defect classifier and save it as a model directory")
    _add_data_options(p)
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--variant", choices=["dl-gs", "dl-jl", "transfer"], help="loss: dl-gs (CE), dl-jl (CE + triplet, default), transfer (triplet pre-training, then CE)")
    p.add_argument("--test-frac", type=float, default=0.2, help="share of queries held out for metrics.json (0: none, report validation)")
    p.add_argument("--resume", action="store_true", help="continue a killed run from its last checkpoint in --out")
    p.add_argument("--keep-checkpoint", action="store_true", help="keep checkpoint.safetensors after training")
    _add_model_options(p)
    _add_common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="precision/recall/F1 of a saved model on labelled data")
    p.add_argument("--model", required=True, help="model directory")
    _add_data_options(p)
    p.add_argument("--json", help="also write the metrics to this file")
    _add_common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="add defect_probability and is_defect to a table of pairs")
    p.add_argument("--model", required=True, help="model directory")
    _add_data_options(p)
    p.add_argument("--out", required=True, help="output table (.csv, .tsv, .jsonl or .parquet)")
    _add_common(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("quickstart", help="the main job: train the three variants, print and save the results table")
    _add_data_options(p, required=False)
    p.add_argument("--out", default="defectnas-quickstart", help="output folder (results.*, pr_curve.png, model/)")
    _add_model_options(p)
    _add_common(p)
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser("data", help="rows, queries, defect rate and length percentiles of a table")
    p.add_argument("path", help="table of query–product pairs")
    p.add_argument("--no-labels", action="store_true", help="the table has no labels")
    _add_data_options(p, required=False)
    _add_common(p)
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("download", help="download a public dataset (needs internet)")
    p.add_argument("name", choices=["esci", "wands"])
    p.add_argument("--out", required=True, help="folder to write the files into")
    p.add_argument("--base-url", help=argparse.SUPPRESS)
    _add_common(p)
    p.set_defaults(func=cmd_download)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except DefectnasError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
