"""``qc costmodel collect | train | eval | info``: the cost model's data, fit, evaluation and state.

    qc costmodel collect [--run 1] [--sources resnet18,sweep-000] [--schemes w8a8,w4a8,fp32]
    qc costmodel collect --features-only        # the stored records' features recomputed (no timing)
    qc costmodel train [-o MODEL.json]          # default: $QC_CACHE_DIR/costmodel/<cpu>.json, which
                                                # `--latency-model auto` prefers to the shipped one
    qc costmodel eval [--truth-run 1] [--json]  # leave-one-model-out, noise floor, roofline baseline
    qc costmodel info [--json]                  # records, and which model a latency budget would use

Every command reads the records of this CPU and the current kernel templates from ``--store`` (default
``$QC_CACHE_DIR/costmodel/records.jsonl``, else ``~/.cache/qc``); ``train``, ``eval`` and ``info`` fall back
to the records shipped for this CPU (``compiler/costmodel/data/records-<cpu>.jsonl``) when that store holds
none.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path


def add_commands(commands) -> None:
    """Register ``costmodel`` and its subcommands on the ``qc`` parser's subcommands."""
    cm = commands.add_parser("costmodel", help="the learned kernel-latency model: collect records, train, "
                             "evaluate leave-one-model-out, info")
    sub = cm.add_subparsers(dest="costmodel_command", required=True)
    for name, handler, text in (("collect", _collect, "compile and time layer kernels of models and a sweep"),
                                ("train", _train, "fit the model on the records of this CPU"),
                                ("eval", _eval, "leave-one-model-out error against the noise floor and a "
                                                "roofline baseline"),
                                ("info", _info, "records held, and the model a latency budget would use")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--store", type=Path, help="records file (default: $QC_CACHE_DIR/costmodel/records.jsonl)")
        p.add_argument("--json", action="store_true")
        p.set_defaults(handler=handler)
        if name == "collect":
            p.add_argument("--run", default="1", help="run label: a second run times the same kernels again "
                           "(another process, another time) for the noise floor")
            p.add_argument("--sources", help="comma-separated sources (default: all; `qc costmodel info` lists them)")
            p.add_argument("--schemes", default="w8a8,w4a8,fp32")
            p.add_argument("--features-only", action="store_true",
                           help="recompute the stored records' features from their sources' graphs (after the "
                                "feature set changed); nothing is compiled or timed")
        if name == "train":
            p.add_argument("-o", "--output", type=Path, help="model file (default: $QC_CACHE_DIR/costmodel/<cpu>.json)")
        if name == "eval":
            p.add_argument("--truth-run", default="1", help="the run whose times are the truth (the other: the floor)")


def _collect(args: argparse.Namespace) -> int:
    from ..progress import progress
    from .collect import collect, default_store, refresh_features

    if args.features_only:
        with progress(sys.stderr.isatty()) as bar:
            count = refresh_features(args.store, lambda what, done, total: bar.stage(f"reading {what}", done, total))
        print(f"features recomputed for {count} records in {args.store or default_store()}")
        return 0
    names = [n.strip() for n in args.sources.split(",")] if args.sources else None
    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    with progress(sys.stderr.isatty()) as bar:
        written = collect(args.store, run=args.run, names=names, schemes=schemes,
                          on_step=lambda what, done, total: bar.stage(f"timing {what}", done, total))
    store = args.store or default_store()
    if args.json:
        print(json.dumps({"store": str(store), "written": len(written)}))
    else:
        print(f"{len(written)} records appended to {store} (run {args.run})")
    return 0


def _records(args: argparse.Namespace):
    """(the records ``train`` / ``eval`` / ``info`` read, the file they came from)."""
    from .collect import cpu_name, default_store, load_records
    from .model import SHIPPED

    store = args.store or default_store()
    records = load_records(store)
    shipped = SHIPPED / f"records-{cpu_name()}.jsonl"
    if not records and args.store is None and shipped.is_file():
        store, records = shipped, load_records(shipped)
    return records, store


def _train(args: argparse.Namespace) -> int:
    from .model import CostModel, user_model_path

    model = CostModel.train(_records(args)[0])
    path = model.save(args.output or user_model_path(model.cpu))
    if args.json:
        print(json.dumps({"path": str(path), **model.trained_on, "overhead": model.overhead}))
    else:
        print(f"wrote {path}: {model.trained_on['records']} records of {len(model.trained_on['sources'])} sources, "
              f"CPU {model.cpu}, kernel templates {model.templates}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from ..progress import progress
    from .collect import CostModelError
    from .model import evaluate, report_text

    records, _ = _records(args)
    if not records:
        raise CostModelError("no records for this CPU and these kernel templates: run `qc costmodel collect`")
    with progress(sys.stderr.isatty()) as bar:
        results = evaluate(records, args.truth_run,
                           on_step=lambda what, done, total: bar.stage(f"holding out {what}", done, total))
    print(json.dumps([asdict(r) for r in results], indent=1) if args.json else report_text(results))
    return 0


def _info(args: argparse.Namespace) -> int:
    from .collect import SOURCES, cpu_name, summary, template_hash
    from .model import for_target

    records, store = _records(args)
    model, why = for_target()
    info = {"cpu": cpu_name(), "templates": template_hash(), "store": str(store),
            "records": summary(records), "latency_budgets_use": why if model else f"measurement ({why})",
            "sources": [s.name for s in SOURCES]}
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"CPU {info['cpu']}, kernel templates {info['templates']}")
    print(f"records in {info['store']}: {info['records'] or 'none'}")
    print(f"--max-latency uses: {info['latency_budgets_use']}")
    print(f"sources: {', '.join(info['sources'])}")
    return 0
