"""The `reconciler` command. Each subcommand lives in its own module and is imported only when used,
so `reconciler validate` never pays for pyVmomi or libnbd imports."""

from __future__ import annotations

import importlib

import click

from reconciler import __version__

# name -> "module:attribute" of a click command
COMMANDS: dict[str, str] = {
    "validate": "reconciler.cli.validate:validate",
    "fmt": "reconciler.cli.fmt:fmt",
    "lab": "reconciler.cli.lab:lab",
    "inspect": "reconciler.cli.inspect:inspect",
    "plan": "reconciler.cli.plan:plan",
    "apply": "reconciler.cli.apply:apply",
    "status": "reconciler.cli.status:status",
    "watch": "reconciler.cli.watch:watch",
    "restore": "reconciler.cli.restore:restore",
    "verify": "reconciler.cli.verify:verify",
    "backups": "reconciler.cli.backups:backups",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            module_name, attr = COMMANDS[cmd_name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="reconciler")
def cli() -> None:
    """Agentless backup of VMware vSphere VMs onto ZFS, driven as code."""


def main() -> None:
    cli()
