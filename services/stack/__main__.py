"""The command line: ``python -m services.stack up|down|status|redis|demo``."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import services.stack
from services.stack import tokens
from services.stack.commands import down, service_env, status, up
from services.stack.demo import demo
from services.stack.processes import StackError, ensure_redis, record_pid, var_dir


def main(argv: Sequence[str] | None = None) -> int:
    # --help shows the package's docstring up to its table of modules
    about = (services.stack.__doc__ or "").partition("\n\n    ")[0]
    parser = argparse.ArgumentParser(prog="python -m services.stack", description=about)
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start redis, mlflow, api and workers")
    p_up.add_argument("--workers", type=int, default=2)
    p_up.add_argument("--no-mlflow", action="store_true")
    sub.add_parser("down", help="stop what `up` started")
    sub.add_parser("status", help="show what answers")
    sub.add_parser("redis", help="make sure Redis answers at REDIS_URL (start it if local)")
    p_demo = sub.add_parser("demo", help="up, then run a sweep to the end")
    p_demo.add_argument("spec", nargs="?", default="examples/lr_sweep.json")
    p_demo.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait")
    p_token = sub.add_parser("token", help="create, list or revoke API tokens (in the database)")
    tok = p_token.add_subparsers(dest="action", required=True)
    p_create = tok.add_parser("create", help="a new token for a user (created if new)")
    p_create.add_argument("--user", required=True)
    p_create.add_argument("--admin", action="store_true", help="a new user is an admin")
    p_create.add_argument("--name", help="what the token is for")
    tok.add_parser("list", help="every token (never their secrets)")
    p_revoke = tok.add_parser("revoke", help="revoke a token by its id")
    p_revoke.add_argument("id")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up(workers=args.workers, mlflow=not args.no_mlflow)
        elif args.command == "down":
            down()
        elif args.command == "status":
            return status()
        elif args.command == "redis":
            env, var = service_env(), var_dir()
            proc = ensure_redis(env["REDIS_URL"], var / "redis", var / "log" / "redis.log")
            if proc is not None:
                record_pid("redis", proc)
                print(f"started redis-server (pid {proc.pid}); `make down` stops it")
            else:
                print(f"redis: answering at {env['REDIS_URL']}")
        elif args.command == "demo":
            demo(Path(args.spec), timeout=args.timeout)
        elif args.command == "token":
            return _token(args)
    except (StackError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _token(args: argparse.Namespace) -> int:
    env = service_env()
    if args.action == "create":
        try:
            print(tokens.create(env, user=args.user, admin=args.admin, name=args.name))
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print("(shown this once: keep it; it is stored only as a hash)", file=sys.stderr)
    elif args.action == "list":
        print(json.dumps(tokens.listing(env), indent=2))
    else:
        try:
            print(json.dumps(tokens.revoke(env, args.id), indent=2))
        except LookupError:
            print(f"error: no token {args.id}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
