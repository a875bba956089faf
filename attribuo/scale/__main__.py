"""Command line of :mod:`attribuo.scale` (``python -m attribuo.scale run|status``)."""

from __future__ import annotations

import argparse
import json
import sys

from .._engine.errors import ArgumentTypeError, ArgumentValueError
from .job import Job, run
from .store import status


def _json_object(text: str, name: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ArgumentValueError(f"`{name}` is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise ArgumentValueError(f"`{name}` must be a JSON object of keyword arguments, got {text!r}")
    return value


def _target(text: str):
    if text in ("label", "pred"):
        return text
    if text == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise ArgumentValueError(f"`--target` must be label, pred, none or an int, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attribuo.scale", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    go = commands.add_parser("run", help="attribute a dataset (alone or in every torchrun process)")
    go.add_argument("--model", required=True, help="PKG.MOD:FACTORY returning the nn.Module")
    go.add_argument("--dataset", required=True, help="PKG.MOD:FACTORY returning a map-style Dataset")
    go.add_argument("--method", required=True, help="an attribution class of attribuo.attr")
    go.add_argument("--init-args", default="{}", help="JSON keyword arguments of the method's constructor")
    go.add_argument("--attribute-args", default="{}", help="JSON keyword arguments of attribute()")
    go.add_argument("--target", default="label", help="label, pred, none or an int")
    go.add_argument("--batch-size", type=int, default=32)
    go.add_argument("--shard-size", type=int, default=256)
    go.add_argument("--delta", action="store_true", help="also store convergence deltas")
    go.add_argument("--out", required=True)
    go.add_argument("--resume", action="store_true", help="skip shards that are complete and verified")
    go.add_argument("--no-progress", action="store_true")
    show = commands.add_parser("status", help="how far a run is")
    show.add_argument("out")
    args = parser.parse_args(argv)
    try:
        if args.command == "status":
            print(json.dumps({k: v for k, v in status(args.out).items() if k != "job"}))
            return 0
        job = Job(
            args.model, args.dataset, args.method,
            _json_object(args.init_args, "--init-args"), _json_object(args.attribute_args, "--attribute-args"),
            _target(args.target), args.batch_size, args.shard_size, args.delta,
        )
        manifest = run(job, args.out, resume=args.resume, progress=not args.no_progress)
    except (ArgumentValueError, ArgumentTypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"examples": manifest["examples"], "shards": manifest["shards"], "out": args.out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
