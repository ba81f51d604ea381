"""``shopsearch events ingest`` and ``shopsearch forget-user``: shopper behaviour in and out.

Both read the pseudonym key from ``SHOPSEARCH_PSEUDONYM_KEY`` (:func:`pseudonym_key`; unset:
the profile directory's key file) and pass it to the library, as ``serve`` does.
"""

from __future__ import annotations

from pathlib import Path

import click

from shopsearch.cli.options import index_options, profiles_option, pseudonym_key


@click.group("events")
def events_group() -> None:
    """Shopper behaviour: validate event logs and update the stored profiles."""


@events_group.command("ingest")
@click.argument("log_path", metavar="LOG", type=click.Path(path_type=Path))
@profiles_option(required=True)
@index_options
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="CSV for rejected events (default: ./shopsearch-event-rejects.csv).",
)
def events_ingest_cmd(log_path: Path, profiles: Path, location, rejects: Path | None) -> None:
    """Validate LOG (Parquet or JSON Lines) and add it to the profiles (user ids pseudonymized)."""
    from personalization.ingest import ingest_event_log

    summary = ingest_event_log(
        log_path, profiles, location, rejects_path=rejects, key=pseudonym_key()
    )
    click.echo(
        f"ingested {summary.added} events ({summary.duplicates} already there), rejected {summary.rejected}"
        + (f": see {summary.rejects_path}" if summary.rejects_path else "")
        + (f"; skipped {summary.forgotten} events of forgotten users" if summary.forgotten else "")
    )


@click.command("forget-user")
@click.argument("user_id")
@profiles_option(required=True)
def forget_user_cmd(user_id: str, profiles: Path) -> None:
    """Remove every trace of USER_ID from the profile store."""
    from personalization.ingest import forget_user

    done = forget_user(
        profiles, user_id, key=pseudonym_key()
    )  # ForgetIncomplete: one line, exit 2, says why
    if done.removed:
        message = f"forgot the user: {done.removed} stored rows removed"
    elif done.already_forgotten:
        message = "that user was already forgotten: nothing of theirs is stored"
    else:
        message = "no stored data for that user"
    click.echo(f"{message}; their events will be skipped if logged again")


COMMANDS = [events_group, forget_user_cmd]
