"""Which new passwords are allowed: length, common passwords, the account's email.

Lengths are counted in Unicode code points after NFKC normalisation (the form the
hasher stores): full-width letters count like ASCII ones, and "e" followed by a
combining accent composes into one code point. Comparisons with the
common-password list and the email are case-insensitive (``str.casefold``).

The list of common passwords (``common_passwords.txt``, package data) is read
lazily, once per policy object, with ``importlib.resources``; building a policy
does no I/O.
"""

from __future__ import annotations

import importlib.resources
import threading
import unicodedata

from cortex_core import errors
from cortex_core.errors import FieldViolation

#: The published contract (``auth_service.proto``, RegisterRequest.password) says
#: 8 to 1024 characters, not a common one and not the email.
DEFAULT_MIN_CHARS = 8
DEFAULT_MAX_CHARS = 1024
#: NIST SP 800-63B never allows fewer than 8.
ABSOLUTE_MIN_CHARS = 8

POLICY_MESSAGE = "password does not meet the policy"
_PACKAGE = "cortex_core.adapters.security"
_LIST_RESOURCE = "common_passwords.txt"


def load_common_passwords() -> frozenset[str]:
    """Read the shipped list (blocking file read; a few milliseconds, done once)."""
    text = importlib.resources.files(_PACKAGE).joinpath(_LIST_RESOURCE).read_text(encoding="utf-8")
    return frozenset(
        line.strip().casefold()
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
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

        The first call loads the list (one small file read); call ``load`` at
        start to keep even that off the event loop.
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
        if folded in self.load() or self._matches_email(folded, email):
            violations.append(
                FieldViolation(
                    field,
                    "is too common or too easy to guess; choose a longer, unique passphrase",
                    reason="PASSWORD_TOO_COMMON",
                )
            )
        if violations:
            raise errors.InvalidArgument(POLICY_MESSAGE, violations)

    def load(self) -> frozenset[str]:
        """The common-password set, read from package data on first use."""
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
