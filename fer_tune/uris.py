"""URIs as they may be shown or stored: without the credentials they can carry.

A tracking or storage URI carries secrets in two places: the userinfo (`user:password@`, or a
bare token `ghp_x@`) and the query string (`?token=`, `&X-Amz-Signature=`, `&sig=` of an Azure
SAS, `?password=` of a database URL). `redact` masks both, in any text, so it can be applied to
a message, a JSON file or an MLflow tag as a whole:

    redact("postgresql://fer:pw@db/x?sslpassword=s")   # postgresql://fer:***@db/x?sslpassword=***
"""

from __future__ import annotations

import re

MASK = "***"
# Query keys whose value is a secret: any key containing one of these words, in any case
# (token, access_token, X-Amz-Security-Token, api_key, AWSAccessKeyId, sig, X-Amz-Signature ...).
SECRET_WORDS = ("token", "key", "secret", "pass", "pwd", "sig", "credential", "auth", "session", "sas")

# The userinfo runs from the scheme to the last @ of the URI (up to whitespace): a password may hold
# any printable character, an unescaped @, /, #, ? or quote included (SQLAlchemy and browsers accept
# them), and each of those would end a parsed userinfo early. Masking past a later @ (one in a query
# value) hides a host as well: never a secret kept.
_USERINFO_PASSWORD = re.compile(r"(?<=://)([^/@:\s?#]*):\S*@")
_USERINFO_BARE = re.compile(r"(?<=://)[^/@:\s?#]+@")
_QUERY_SECRET = re.compile(
    r"([?&;]([^=&;\s#'\"]*(?:"
    + "|".join(SECRET_WORDS)
    + r")[^=&;\s#'\"]*)=)[^&;\s#'\")]*?(?=:?(?:[&;\s#'\")]|$))",  # a trailing ":" is the message's, not the value's
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` with every URI's password, bare userinfo token and secret query value replaced by ***."""
    text = _USERINFO_PASSWORD.sub(rf"\1:{MASK}@", text)
    text = _USERINFO_BARE.sub(f"{MASK}@", text)
    return _QUERY_SECRET.sub(rf"\1{MASK}", text)


_USERINFO = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<user>[^/@:\s?#]*)(?::(?P<password>\S*))?@(?P<rest>[^@]*)$"
)


def split_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """(the URI without its userinfo, user, password); (uri, None, None) where it has none.

    The userinfo runs to the URI's last @, as in `redact`: a password may hold any printable character.
    """
    found = _USERINFO.match(uri.strip())
    if found is None:
        return uri, None, None
    return f"{found['scheme']}://{found['rest']}", found["user"] or None, found["password"]
