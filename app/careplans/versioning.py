"""ETags and If-Match for care plans: a write names the version it read, so no change is lost."""

from __future__ import annotations


class PreconditionError(Exception):
    """428 (no If-Match) or 412 (If-Match names another version)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def etag(version: int) -> str:
    return f'W/"{version}"'


def _versions(header: str) -> list[str]:
    tags = []
    for part in header.split(","):
        tag = part.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        tags.append(tag.strip('"'))
    return tags


def check_if_match(header: str | None, current_version: int) -> None:
    """RFC 9110 If-Match with weak comparison on the version; `*` matches any existing plan."""
    if header is None or not header.strip():
        raise PreconditionError(428, "If-Match is required: send the ETag of the version you read")
    tags = _versions(header)
    if "*" in tags or str(current_version) in tags:
        return
    raise PreconditionError(412, f"the care plan changed: current version is {current_version}")
