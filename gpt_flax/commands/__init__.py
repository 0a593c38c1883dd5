"""Subcommands of the `gpt-flax` command line; each module has `add_parser(subparsers)` and `run(args)`."""

# Module names under gpt_flax.commands, in the order `gpt-flax --help` lists them.
COMMANDS = ("convert", "generate", "init_random")
