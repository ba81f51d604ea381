"""Keyed pseudonyms for user ids: the only form in which a user is ever stored.

A pseudonym is ``HMAC-SHA256(key, user_id)`` as hex, first 32 characters (128 bits). Without
the key a pseudonym cannot be linked back to a user id, not even by hashing guessed ids;
with the key, the same user always gets the same pseudonym, which is how
:meth:`personalization.profiles.ProfileStore.forget` finds a user's rows.

The key is given (hex text: what the command line and the service read from the environment
variable :data:`KEY_ENV`), or kept in ``<dir>/pseudonym.key`` (32 random bytes, created on first
use with mode 0600). Losing the key unlinks every stored profile from its user (a new key starts
new pseudonyms); keep it out of backups that leave the machine.

Before hashing, a user id is normalised (:func:`normalize_user_id`) so that the spellings
of one person's id give one pseudonym: at ingest, at query time and in ``forget-user``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import tempfile
import unicodedata
from pathlib import Path

from core.errors import ShopsearchError

KEY_ENV = "SHOPSEARCH_PSEUDONYM_KEY"
KEY_FILE = "pseudonym.key"
KEY_BYTES = 32
MIN_KEY_BYTES = 16
PSEUDONYM_CHARS = 32


# local@domain.tld, no spaces: what counts as an e-mail address for case-folding.
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def normalize_user_id(user_id: str) -> str:
    """The canonical spelling of a user id, the one that gets pseudonymized.

    Surrounding spaces are stripped and the id is put in Unicode NFKC form (fullwidth and
    compatibility characters become their plain forms). An e-mail address
    (``local@domain.tld``) is also case-folded, whole: shops and mail providers treat
    ``Alice@Example.com`` and ``alice@example.com`` as one mailbox. Other ids keep their case.
    """
    text = unicodedata.normalize("NFKC", user_id).strip()
    if _EMAIL.fullmatch(text):
        text = text.casefold()
    return text


class Pseudonymizer:
    """Maps raw ids to keyed, irreversible pseudonyms.

    Args:
        key: Secret HMAC key, at least :data:`MIN_KEY_BYTES` bytes.
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) < MIN_KEY_BYTES:
            raise ShopsearchError(
                f"the pseudonym key must be at least {MIN_KEY_BYTES} bytes "
                f"(set {KEY_ENV} to {2 * KEY_BYTES} hex characters, or let shopsearch create "
                f"{KEY_FILE})"
            )
        self._key = bytes(key)

    def __repr__(self) -> str:
        return "Pseudonymizer(key=<hidden>)"

    @classmethod
    def from_dir(cls, directory: str | os.PathLike[str], key: str | None = None) -> Pseudonymizer:
        """The pseudonymizer of a profiles directory: ``key``, else ``directory/pseudonym.key``.

        Args:
            directory: The profiles directory.
            key: The key as hex text (:data:`KEY_BYTES` bytes, what :data:`KEY_ENV` holds: the
                command line and the service read it there and pass it); None or blank: the key
                file, created (32 random bytes, mode 0600) when missing; creation is atomic, so
                concurrent first calls agree on one key.

        Raises:
            ShopsearchError: The key is not hex, or the key file is unreadable or too short.
        """
        if key is not None and key.strip():
            try:
                raw = bytes.fromhex(key.strip())
            except ValueError:
                raise ShopsearchError(
                    f"the pseudonym key ({KEY_ENV}) is not hexadecimal; give {2 * KEY_BYTES} hex "
                    "characters (e.g. the output of: "
                    "python -c 'import secrets; print(secrets.token_hex(32))')"
                ) from None
            return cls(raw)
        path = Path(directory) / KEY_FILE
        if not path.exists():
            _create_key_file(path)
        try:
            key = path.read_bytes()
        except OSError as exc:
            raise ShopsearchError(
                f"{path}: cannot read the pseudonym key ({exc.strerror})"
            ) from None
        if len(key) < MIN_KEY_BYTES:
            raise ShopsearchError(
                f"{path}: pseudonym key is {len(key)} bytes, expected {KEY_BYTES}; "
                "restore it from a backup (deleting it unlinks every stored profile)"
            )
        return cls(key)

    def pseudonym(self, user_id: str) -> str:
        """The user's pseudonym: HMAC-SHA256(key, normalised user_id) hex, first 32 characters.

        The id is normalised first (:func:`normalize_user_id`).
        """
        return self.raw_pseudonym(normalize_user_id(user_id))

    def raw_pseudonym(self, user_id: str) -> str:
        """HMAC-SHA256(key, user_id) of the id exactly as given (stores written before ids
        were normalised used this; :meth:`ProfileStore.forget` checks it too)."""
        return hmac.new(self._key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()[
            :PSEUDONYM_CHARS
        ]

    def tombstone(self, pseudonym: str) -> str:
        """What an erased user leaves behind: a keyed hash of their pseudonym.

        Domain-separated from pseudonyms, so the store keeps no value equal to the erased
        user's pseudonym, yet a later event of theirs is recognised and skipped.
        """
        message = b"forgotten\x00" + pseudonym.encode("utf-8")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:PSEUDONYM_CHARS]

    def session_pseudonym(self, session_id: str) -> str:
        """A keyed pseudonym for a session id (domain-separated from user pseudonyms).

        Session ids are stored this way too, in case they embed a user id. ``""`` stays ``""``.
        """
        if not session_id:
            return ""
        message = b"session\x00" + session_id.encode("utf-8")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:PSEUDONYM_CHARS]


def _create_key_file(path: Path) -> None:
    """Write a fresh random key to ``path`` with mode 0600, unless another process won."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".pseudonym.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(KEY_BYTES))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # atomic, and never overwrites a key another process made
        except FileExistsError:
            pass
        except OSError:  # no hard links on this filesystem: exclusive create instead
            with contextlib.suppress(FileExistsError):
                out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(out, "wb") as fh:
                    fh.write(Path(tmp).read_bytes())
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
