"""The ``kintsugi`` command line.

Each area keeps its commands in its own module; they are imported only when used, so
``kintsugi compile`` or ``kintsugi decrypt`` never load the web stack.
"""

from __future__ import annotations

import importlib

import click

#: command name -> "module:attribute" of the click command or group that implements it
COMMANDS: dict[str, str] = {
    # sync_protocol (issue 2)
    "keys": "server.cli.keys:keys_group",
    "decrypt": "server.cli.decrypt:decrypt_command",
    # form compiler (issue 3)
    "compile": "server.cli.compile:compile_command",
    "i18n": "server.cli.i18n:i18n_group",
    # sync server (issue 4)
    "setup": "server.cli.admin:setup_command",
    "db": "server.cli.admin:db_group",
    "serve": "server.cli.admin:serve_command",
    "projects": "server.cli.admin:projects_group",
    "forms": "server.cli.admin:forms_group",
    "app-users": "server.cli.admin:app_users_group",
    "users": "server.cli.admin:users_group",
    # custody, reconciliation, exports (issue 5)
    "unlock": "server.cli.cases:unlock_command",
    "lock": "server.cli.cases:lock_command",
    "reconcile": "server.cli.cases:reconcile_command",
    "export": "server.cli.cases:export_group",
    "submissions": "server.cli.cases:submissions_group",
    # operations (issue 6)
    "backup": "server.cli.ops:backup_command",
    "restore": "server.cli.ops:restore_command",
}


class LazyGroup(click.Group):
    """A group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            return None  # area not built yet: click reports "No such command"
        return getattr(module, attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kintsugi")
def main() -> None:
    """Kintsugi: ASO form compiler and ODK-compatible sync server."""
