"""API keys -> tenant and allowed collections. The tenant comes only from the key, so nothing a
request body says can widen what it may read."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from agent.settings import Settings

PUBLIC_TENANT = "public"
KEY_PREFIX = "ar-"


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    collections: frozenset[str] | None
    name: str = ""
    groups: tuple[str, ...] | None = None
    """None: reads every document of its tenant; else only those for everyone or for one of
    these groups."""

    @property
    def owner(self) -> str:
        """Whose threads, runs and traces these are: the tenant, or for a key limited to groups
        the tenant and those groups (a thread cites documents its groups may read; another key
        of the tenant, with other groups, must not read it back)."""
        if self.groups is None:
            return self.tenant
        return f"{self.tenant}#groups:{','.join(self.groups)}"

    def allows(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections


class AuthError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class KeyRing:
    def __init__(self, settings: Settings) -> None:
        self._entries = [
            (
                entry.sha256,
                Principal(
                    tenant=entry.tenant,
                    collections=frozenset(entry.collections)
                    if entry.collections is not None
                    else None,
                    name=entry.name,
                    groups=tuple(sorted(set(entry.groups))) if entry.groups is not None else None,
                ),
            )
            for entry in settings.api_keys
        ]
        self.open = not self._entries
        self._open_principal = Principal(tenant=PUBLIC_TENANT, collections=None, name="anonymous")

    def authenticate(self, authorization: str | None) -> Principal:
        if self.open:
            return self._open_principal
        if not authorization:
            raise AuthError(
                401, "unauthorized", "Missing API key: send `Authorization: Bearer KEY`."
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(
                401, "unauthorized", "Malformed Authorization header: use `Bearer KEY`."
            )
        digest = hash_key(token.strip())
        found: Principal | None = None
        for stored, principal in self._entries:
            if hmac.compare_digest(stored, digest):
                found = principal
        if found is None:
            raise AuthError(401, "unauthorized", "Invalid API key.")
        return found
