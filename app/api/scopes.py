"""SMART App Launch scopes: parse the token's `scope` claim and check one interaction against it.

SMART v2 (App Launch 2.0) clinical scopes are `<context>/<Type or *>.<permissions>`, permissions an
ordered subset of `cruds` (create, read, update, delete, search), e.g. `user/Task.rs`,
`user/CarePlan.cruds`, `system/*.c`. The v1 forms `.read` (= rs), `.write` (= cud) and `.*` (= cruds)
are accepted too. Contexts: `user/` (what the signed-in user may do, still limited by role, team and
Part 2) and `system/` (a backend client such as an interface engine). `patient/` scopes need a patient
launch context carecoord does not offer, so they grant nothing; neither do v2 granular scopes with a
`?param=` restriction (not enforceable here) nor `openid`, `fhirUser`, `launch...`. Scopes only ever
narrow what the roles allow; they never widen it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from fastapi import Depends, Request

from app.api.auth import CurrentPrincipal, Principal
from app.api.problems import Problem

Interaction = Literal["c", "r", "u", "d", "s"]
PERMISSION_ORDER = "cruds"
CONTEXTS = frozenset({"user", "system"})
V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(r"^(?P<context>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]{0,63})\.(?P<perm>[a-z*]+)$")


@dataclass(frozen=True, slots=True)
class Grant:
    resource_type: str  # a FHIR resource type, or "*"
    interactions: frozenset[str]


def _permissions(text: str) -> frozenset[str] | None:
    if text in V1_PERMISSIONS:
        return frozenset(V1_PERMISSIONS[text])
    # v2: letters of "cruds", each at most once, in that order
    positions = [PERMISSION_ORDER.find(c) for c in text]
    if not text or -1 in positions or positions != sorted(set(positions)):
        return None
    return frozenset(text)


def parse_scopes(claim: str) -> tuple[Grant, ...]:
    """The grants of a space-separated `scope` claim; scopes carecoord cannot honour grant nothing."""
    grants: list[Grant] = []
    for scope in claim.split():
        match = _SCOPE.match(scope)
        if match is None or match["context"] not in CONTEXTS:
            continue
        permissions = _permissions(match["perm"])
        if permissions:
            grants.append(Grant(match["type"], permissions))
    return tuple(grants)


def allows(grants: Iterable[Grant], resource_type: str, interaction: Interaction) -> bool:
    return any(g.resource_type in ("*", resource_type) and interaction in g.interactions for g in grants)


def interaction_for(method: str, has_path_params: bool) -> Interaction:
    """The SMART interaction an HTTP call is: GET reads one resource (r) or searches (s); POST to a
    collection creates (c), POST to an existing resource (an action such as claim) updates (u)."""
    method = method.upper()
    if method in ("GET", "HEAD"):
        return "r" if has_path_params else "s"
    if method == "POST":
        return "u" if has_path_params else "c"
    if method in ("PUT", "PATCH"):
        return "u"
    if method == "DELETE":
        return "d"
    return "r"


def check_scope(
    principal: Principal, resource_types: tuple[str, ...], interaction: Interaction, *, required: bool
) -> None:
    """403 unless the token's scopes allow `interaction` on every one of `resource_types`. A token
    without a `scope` claim passes only where scopes are not required (development default)."""
    if principal.scopes is None:
        if required:
            raise Problem(403, "Forbidden", "the token carries no SMART scope claim", field="scope")
        return
    missing = [t for t in resource_types if not allows(principal.scopes, t, interaction)]
    if missing:
        raise Problem(
            403,
            "Forbidden",
            f"the token's scopes do not allow {interaction!r} on {', '.join(missing)}",
            field="scope",
        )


def require_scope(*resource_types: str, interaction: Interaction | None = None) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency: the interaction (from the HTTP method unless given) must be granted by the
    token's scopes on each resource type. Routers add it with `dependencies=[Depends(require_scope(...))]`."""

    async def dependency(request: Request, principal: CurrentPrincipal) -> Principal:
        needed = interaction or interaction_for(request.method, bool(request.path_params))
        check_scope(principal, resource_types, needed, required=request.app.state.settings.scopes_required)
        return principal

    dependency.__name__ = f"require_scope_{'_'.join(resource_types)}"
    return dependency


def scoped(*resource_types: str, interaction: Interaction | None = None) -> list[object]:
    """`dependencies=scoped("Task")`: the list form routers and routes take."""
    return [Depends(require_scope(*resource_types, interaction=interaction))]
