"""The class password: who may use the app once it is open to the classroom network.

A teacher who starts the app with ``CNN_CLASSROOM_PASSWORD`` set gets a password page before
any other page (Streamlit); the Classify tab and its ``/classify`` API let in only a browser
the pages let in or a client that sends the password (``gradio_app.ClassGate``). Unset, the
app is open to whoever reaches it (the default binds localhost only). A browser that gave
the password keeps ``token()`` in its URL (``?class=``), so a refresh does not ask again;
it is derived from the password, so it says nothing of it and changes with it.

The teacher: with ``CNN_CLASSROOM_TEACHER_KEY`` set, whoever types it in the sidebar; unset,
whoever opens the app on the machine itself (localhost). Students never see teacher pages.
"""

from __future__ import annotations

import hashlib
import hmac
import os

PASSWORD_ENV = "CNN_CLASSROOM_PASSWORD"
TEACHER_ENV = "CNN_CLASSROOM_TEACHER_KEY"  # unlocks the teacher's pages (the run library)
_CONTEXT = b"cnn-classroom: this browser gave the class password"
_TEACHER_CONTEXT = b"cnn-classroom: this browser gave the teacher key"


def password() -> str | None:
    """The class password, or None when the teacher set none."""
    return os.environ.get(PASSWORD_ENV) or None


def accepts(given: str) -> bool:
    """Whether ``given`` is the class password (always, when there is none); in constant
    time, so its length or letters cannot be timed."""
    expected = password()
    if expected is None:
        return True
    return hmac.compare_digest(given.encode(), expected.encode())


def token() -> str:
    """What a browser that gave the password keeps in its URL."""
    expected = password() or ""
    return hmac.new(expected.encode(), _CONTEXT, hashlib.sha256).hexdigest()[:32]


def accepts_token(given: str) -> bool:
    return password() is None or hmac.compare_digest(given.encode(), token().encode())


def teacher_key() -> str | None:
    """The teacher key, or None when the teacher set none (then the machine's own user, a
    visitor from localhost, is the teacher)."""
    return os.environ.get(TEACHER_ENV) or None


def accepts_teacher(given: str) -> bool:
    """Whether ``given`` is the teacher key (never, when there is none), in constant time."""
    expected = teacher_key()
    return expected is not None and hmac.compare_digest(given.encode(), expected.encode())


TEACHER_HOURS = 12  # how long a browser stays the teacher's: a school day


def teacher_token(issued: float | None = None) -> str:
    """What a browser that gave the teacher key keeps in a cookie (a refresh keeps the
    role): when it was issued, signed with the key, so it says nothing of the key, a new
    key voids it, and the server refuses it after TEACHER_HOURS."""
    import time

    stamp = f"{int(time.time() if issued is None else issued):x}"
    expected = (teacher_key() or "").encode()
    signed = hmac.new(expected, _TEACHER_CONTEXT + stamp.encode(), hashlib.sha256).hexdigest()
    return f"{stamp}.{signed[:32]}"


def accepts_teacher_token(given: str, now: float | None = None) -> bool:
    """Whether ``given`` is a teacher's token of today's key, issued at most TEACHER_HOURS
    ago (never, when no key is set)."""
    import time

    stamp, _, _ = given.partition(".")
    try:
        issued = int(stamp, 16)
    except ValueError:
        return False
    age = (time.time() if now is None else now) - issued
    return (teacher_key() is not None and 0 <= age <= TEACHER_HOURS * 3600
            and hmac.compare_digest(given.encode(), teacher_token(issued).encode()))  # fmt: skip
