"""Roles and what each may do: the one table every route is checked against (README "Users and roles").

Every route names exactly one permission (app/auth/deps.py); the app refuses to start if one does not, and
tests/integration/auth/test_permissions.py walks every route and calls it as each role.
"""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    admin = "admin"  # everything, users included
    service = (
        "service"  # automation: datasets, seeds, generation (fine-tuning and schedules later); no reviews
    )
    reviewer = "reviewer"  # people reviewing: read datasets and items, make review decisions; nothing else


class Permission(enum.StrEnum):
    read = "read"  # datasets, seeds, items, review progress and history, one's own account
    manage_datasets = "manage_datasets"  # create datasets, change their settings, import seeds and items
    generate = "generate"  # generation jobs (queue, preview, cancel, read, replies) and the backends
    review = "review"  # claim items, approve / edit / reject, undo, restore filtered items
    review_admin = "review_admin"  # bulk actions on a query, reopen decided items, settle disputes
    manage_users = "manage_users"  # users, everyone's API tokens, the audit log


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.admin: frozenset(Permission),
    Role.service: frozenset({Permission.read, Permission.manage_datasets, Permission.generate}),
    Role.reviewer: frozenset({Permission.read, Permission.review}),
}


def allows(role: Role, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS[role]


def role_table_markdown() -> str:
    """The table as README and docs show it (a test keeps the README's copy equal to this)."""
    roles = list(Role)
    lines = ["| permission | " + " | ".join(r.value for r in roles) + " |", "|---" * (len(roles) + 1) + "|"]
    for permission in Permission:
        marks = ["yes" if allows(r, permission) else "" for r in roles]
        lines.append(f"| `{permission.value}` | " + " | ".join(marks) + " |")
    return "\n".join(lines)
