"""Who is asking: the credentials the service issues, checks and revokes.

- :mod:`.credentials` — API tokens (``Authorization: Bearer``) and web sessions (a cookie):
  random secrets from :mod:`secrets`, stored as SHA-256 digests, compared in constant time,
  expiring and revocable; each session's CSRF token;
- :mod:`.passwords` — argon2id password hashes for the web page's sign-in;
- :mod:`.cli` — ``python -m vs_lib user token|revoke|list|password``.

The tables live in the platform database (:mod:`vs_lib.database`). The HTTP side (reading
the header or cookie, the sign-in form, CSRF checks) is :mod:`vs_lib.api.security`.
"""

from .cli import CLI_HELP, cli_add_arguments, cli_main
from .credentials import (
    AuthError,
    CredentialInfo,
    Principal,
    UnknownUser,
    csrf_token,
    issue,
    list_credentials,
    resolve,
    revoke,
    user_id_of,
    verify_csrf,
)
from .passwords import check_password, set_password

__all__ = [
    "CLI_HELP",
    "AuthError",
    "CredentialInfo",
    "Principal",
    "UnknownUser",
    "check_password",
    "cli_add_arguments",
    "cli_main",
    "csrf_token",
    "issue",
    "list_credentials",
    "resolve",
    "revoke",
    "set_password",
    "user_id_of",
    "verify_csrf",
]
