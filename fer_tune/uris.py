"""URIs as they may be shown: without the password of a user:password@ part."""

from __future__ import annotations

import re


def redact(text: str) -> str:
    """`text` with every URI's password replaced by *** (http://user:***@host), for messages, files and tags."""
    return re.sub(r"(?<=://)([^/@:\s]*):[^/@\s]*@", r"\1:***@", text)
