"""Security: device credentials, API tokens and roles, audit log, rate limits."""

from __future__ import annotations

from edgewise.security.credentials import (
    ROLE_RANK,
    AuditEntry,
    DeviceRecord,
    Principal,
    Security,
    TokenRecord,
)
from edgewise.security.ratelimit import RateLimiter

__all__ = ["ROLE_RANK", "AuditEntry", "DeviceRecord", "Principal", "RateLimiter", "Security",
           "TokenRecord"]
