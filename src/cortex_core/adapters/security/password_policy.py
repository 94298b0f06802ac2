"""Which new passwords are allowed: length, common passwords, the account's email.

Lengths are counted in Unicode code points after NFKC normalisation (the form the
hasher stores): full-width letters count like ASCII ones, and "e" followed by a
combining accent composes into one code point. Comparisons with the
common-password list and the email are case-insensitive (``str.casefold``).

The blocklist comes from the maintained ``zxcvbn`` package (its frequency lists:
the 30,000 most common passwords of a 10-million-entry breach corpus, plus the
most common English words, names and film/TV words, as NIST SP 800-63B asks for
"dictionary words"), never from a list written here. Three checks use it:

- the password itself is on the list;
- the password minus decoration at either end (digits, punctuation, spaces, as
  in ``Summer2024!``) is a listed word of at least four characters;
- the whole password is one repeat or one sequence (``lovelove``, ``88888888``,
  ``987654321``), found with zxcvbn's own matchers, for passwords up to
  :data:`PATTERN_MAX_CHARS` (zxcvbn's own input bound).

The lists are imported lazily, once per policy object (about 0.2 s); building a
policy does no I/O. Call :meth:`PasswordPolicy.load` at start, off the event loop.
"""

from __future__ import annotations

import string
import threading
import unicodedata
from collections.abc import Callable

from cortex_core import errors
from cortex_core.errors import FieldViolation

#: The published contract (``auth_service.proto``, RegisterRequest.password) says
#: 8 to 1024 characters, not a common one and not the email.
DEFAULT_MIN_CHARS = 8
DEFAULT_MAX_CHARS = 1024
#: NIST SP 800-63B never allows fewer than 8.
ABSOLUTE_MIN_CHARS = 8

POLICY_MESSAGE = "password does not meet the policy"
#: Listed entries shorter than this are not kept: only a stem could match them,
#: and a stem must be at least this long.
MIN_STEM_CHARS = 4
#: Repeats and sequences are looked for only up to zxcvbn's own input bound.
PATTERN_MAX_CHARS = 72
_DECORATION = string.digits + string.punctuation + string.whitespace


def load_common_passwords() -> frozenset[str]:
    """Every entry of zxcvbn's frequency lists with at least :data:`MIN_STEM_CHARS`
    characters, case-folded (an import of a large module: call it once, at start)."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(
        entry.casefold()
        for entries in FREQUENCY_LISTS.values()
        for entry in entries
        if len(entry) >= MIN_STEM_CHARS
    )


def _whole_pattern_matchers() -> tuple[Callable[[str], list[dict[str, int]]], ...]:
    from zxcvbn import matching

    return (matching.repeat_match, matching.sequence_match)


def is_one_pattern(password: str) -> bool:
    """True when a single zxcvbn repeat or sequence match spans all of ``password``."""
    if len(password) > PATTERN_MAX_CHARS:
        return False
    last = len(password) - 1
    return any(
        match["i"] == 0 and match["j"] == last
        for matcher in _whole_pattern_matchers()
        for match in matcher(password)
    )


class PasswordPolicy:
    """The ``PasswordPolicy`` port: raises ``InvalidArgument`` for a refused password.

    Rules, all reported together as ``FieldViolation``s on ``field``:

    - fewer than ``min_chars`` code points → ``PASSWORD_TOO_SHORT``;
    - more than ``max_chars`` code points → ``PASSWORD_TOO_LONG`` (a DoS bound);
    - on the common-password list, or equal to the email or its local part
      → ``PASSWORD_TOO_COMMON``.

    The error's own reason is ``INVALID_ARGUMENT`` (the contract's reason for
    BadRequest errors); the specific rule is the violation's reason.
    """

    def __init__(
        self,
        *,
        min_chars: int = DEFAULT_MIN_CHARS,
        max_chars: int = DEFAULT_MAX_CHARS,
        common_passwords: frozenset[str] | None = None,
    ) -> None:
        """``common_passwords`` replaces the shipped list (entries compared casefolded)."""
        if not ABSOLUTE_MIN_CHARS <= min_chars <= max_chars:
            raise ValueError(f"need {ABSOLUTE_MIN_CHARS} <= min_chars <= max_chars")
        self._min = min_chars
        self._max = max_chars
        self._common = (
            frozenset(entry.casefold() for entry in common_passwords)
            if common_passwords is not None
            else None
        )
        self._load_lock = threading.Lock()

    def check(self, password: str, *, field: str = "password", email: str = "") -> None:
        """Return if ``password`` is allowed; raise ``InvalidArgument`` otherwise.

        The first call loads the list (an import of about 0.2 s); call ``load``
        at start, off the event loop, to keep it out of the first request.
        """
        violations: list[FieldViolation] = []
        # Bound the work before normalising: NFKC of a huge string is itself costly.
        if len(password) > self._max * 4:
            violations.append(self._too_long(field))
            raise errors.InvalidArgument(POLICY_MESSAGE, violations)
        normalized = unicodedata.normalize("NFKC", password)
        length = len(normalized)
        if length < self._min:
            violations.append(
                FieldViolation(
                    field,
                    f"must be at least {self._min} characters long",
                    reason="PASSWORD_TOO_SHORT",
                )
            )
        elif length > self._max:
            violations.append(self._too_long(field))
        folded = normalized.casefold()
        if self._is_common(folded) or self._matches_email(folded, email):
            violations.append(
                FieldViolation(
                    field,
                    "is too common or too easy to guess; choose a longer, unique passphrase",
                    reason="PASSWORD_TOO_COMMON",
                )
            )
        if violations:
            raise errors.InvalidArgument(POLICY_MESSAGE, violations)

    def _is_common(self, folded: str) -> bool:
        common = self.load()
        if folded in common:
            return True
        stem = folded.strip(_DECORATION)
        if stem != folded and len(stem) >= MIN_STEM_CHARS and stem in common:
            return True
        return is_one_pattern(folded)

    def load(self) -> frozenset[str]:
        """The common-password set, imported from zxcvbn on first use."""
        common = self._common
        if common is None:
            with self._load_lock:
                if self._common is None:
                    self._common = load_common_passwords()
                common = self._common
        return common

    def _too_long(self, field: str) -> FieldViolation:
        return FieldViolation(
            field, f"must be at most {self._max} characters long", reason="PASSWORD_TOO_LONG"
        )

    @staticmethod
    def _matches_email(folded_password: str, email: str) -> bool:
        if not email:
            return False
        folded_email = unicodedata.normalize("NFKC", email).strip().casefold()
        local_part = folded_email.rpartition("@")[0] if "@" in folded_email else folded_email
        return folded_password in {folded_email, local_part}
