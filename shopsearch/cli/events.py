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
@profiles_option()
@click.option(
    "--search-log",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="The service's search log folder (serve --search-log): the user's rows are removed "
    "from every segment (each rewritten without them), not just unlinked.",
)
def forget_user_cmd(user_id: str, profiles, search_log: Path | None) -> None:
    """Remove every trace of USER_ID from the profile store and the search log.

    Give --profiles, --search-log or both (what the service was started with). The search log
    is found by the key the service wrote it with: SHOPSEARCH_PSEUDONYM_KEY, else the profile
    directory's key file, else the log folder's own.
    """
    from core.errors import ShopsearchError
    from personalization.ingest import forget_user

    if profiles is None and search_log is None:
        raise ShopsearchError("give --profiles, --search-log or both: where the user's data is")
    key = pseudonym_key()
    if search_log is not None:
        from personalization.searchlog_writer import forget, log_pseudonymizer

        pz = log_pseudonymizer(search_log, profiles, key, create=False)
        if pz is None:
            raise ShopsearchError(
                f"{search_log}: no pseudonym.key there and SHOPSEARCH_PSEUDONYM_KEY is not set: "
                "give the key the service wrote the log with (or its --profiles directory)"
            )
        gone = forget(search_log, {pz.pseudonym(user_id), pz.raw_pseudonym(user_id)}, pz)
        names = ", ".join(gone.rewritten[:5]) + (" ..." if len(gone.rewritten) > 5 else "")
        click.echo(
            f"search log: removed {gone.rows} rows of the user"
            + (f", rewrote {len(gone.rewritten)} segment(s): {names}" if gone.rewritten else "")
            + "; the user is tombstoned there, so no replica logs them again"
        )
        if gone.pending:
            click.echo(
                f"search log: {len(gone.pending)} live segment(s) of running replicas still "
                "hold some: each drops them when it rotates (by the end of its UTC day): "
                + ", ".join(gone.pending)
            )
    if profiles is None:
        return
    done = forget_user(profiles, user_id, key=key)  # ForgetIncomplete: one line, exit 2, says why
    if done.removed:
        message = f"forgot the user: {done.removed} stored rows removed"
    elif done.already_forgotten:
        message = "that user was already forgotten: nothing of theirs is stored"
    else:
        message = "no stored data for that user"
    click.echo(f"{message}; their events will be skipped if logged again")


COMMANDS = [events_group, forget_user_cmd]
