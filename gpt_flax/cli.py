"""`gpt-flax` command line (also `python -m gpt_flax`): thin argparse over importable functions.

Failures exit non-zero with one clear line on stderr, not a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from gpt_flax.commands import COMMANDS

# Errors a user can cause (bad path, bad input, no network); anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, OSError, KeyError, ImportError)


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (argparse prints the usage block first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _CommandParser(_Parser):
    """A subcommand's parser: argparse hands a subcommand's unknown arguments back to the main parser,
    whose error then names `gpt-flax`, not `gpt-flax generate`; here they are refused by the subcommand.
    Everything after COMMAND is the subcommand's, so whatever it does not know is an error."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gpt-flax", description="OpenAI GPT (GPT-1) in JAX/Flax.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser)
    for name in COMMANDS:
        module = importlib.import_module(f"gpt_flax.commands.{name}")
        module.add_parser(sub).set_defaults(_run=module.run)
    return parser


class Terminated(BaseException):
    """SIGTERM (a scheduler, `timeout`, `kill`) as an exception, so that the staging directories of
    atomic writes are removed on the way out, as on Ctrl-C."""


def _raise_terminated(signum, frame):
    raise Terminated


def main(argv: list | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: signals cannot be handled here
        previous = None
    try:
        status = args._run(args) or 0
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's flush at exit
        return status
    except KeyboardInterrupt:
        print("gpt-flax: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("gpt-flax: terminated", file=sys.stderr)
        return 143  # as a shell reports a process killed by SIGTERM
    except BrokenPipeError:  # the reader went away (`gpt-flax generate ... | head`): stop quietly
        _silence_stdout()
        return 141  # as a shell reports a process killed by SIGPIPE
    except USER_ERRORS as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"gpt-flax {args.command}: error: {message}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _silence_stdout() -> None:
    """Point stdout's descriptor at /dev/null, so that the interpreter's flush at exit does not fail
    on the broken pipe a second time (a stdout with no descriptor, as under capture, is left alone)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
