"""Security: device credentials, API tokens and roles, audit log, rate limits."""

from __future__ import annotations

from edgewise.security.credentials import (
    AUDIT_GENESIS,
    ROLE_RANK,
    AuditEntry,
    AuditVerification,
    DeviceRecord,
    Principal,
    Security,
    TokenRecord,
    audit_hash,
)
from edgewise.security.ratelimit import RateLimiter

__all__ = ["AUDIT_GENESIS", "ROLE_RANK", "AuditEntry", "AuditVerification", "DeviceRecord",
           "Principal", "RateLimiter", "Security", "TokenRecord", "audit_hash"]
