"""Roles and what each may do: the one table every route is checked against (README "Users and roles").

Every route names exactly one permission (app/auth/deps.py); the app refuses to start if one does not, and
tests/integration/auth/test_permissions.py walks every route and calls it as each role.
"""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    admin = "admin"  # everything, users included
    service = "service"  # automation: datasets, seeds, generation, exports and fine-tuning; no reviews
    reviewer = "reviewer"  # people reviewing: read datasets and items, make review decisions; nothing else


class Permission(enum.StrEnum):
    read = "read"
    manage_datasets = "manage_datasets"
    generate = "generate"
    finetune = "finetune"
    review = "review"
    review_admin = "review_admin"
    manage_users = "manage_users"


MEANING: dict[Permission, str] = {
    Permission.read: "see datasets, seeds, items, review progress and history, the UI's pages, one's own account",
    Permission.manage_datasets: "create datasets, set their review settings, import seeds and items",
    Permission.generate: "queue, preview, watch and cancel generation jobs; create, change, pause, resume and delete schedules; list the backends",
    Permission.finetune: "export datasets, make snapshots, upload files, run and cancel fine-tuning jobs",
    Permission.review: "claim items; approve, edit, reject; undo one's own decision; restore a filtered item",
    Permission.review_admin: "bulk actions over a whole query, reopen decided items, settle disputes, see answers",
    Permission.manage_users: "users, everyone's API tokens, the audit log",
}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.admin: frozenset(Permission),
    Role.service: frozenset(
        {Permission.read, Permission.manage_datasets, Permission.generate, Permission.finetune}
    ),
    Role.reviewer: frozenset({Permission.read, Permission.review}),
}


def allows(role: Role, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS[role]


def role_table_markdown() -> str:
    """The table as README and docs show it (a test keeps the README's copy equal to this)."""
    roles = list(Role)
    lines = [
        "| permission | what it allows | " + " | ".join(r.value for r in roles) + " |",
        "| --- | --- |" + " --- |" * len(roles),
    ]
    for permission in Permission:
        marks = ["yes" if allows(r, permission) else "" for r in roles]
        lines.append(f"| `{permission.value}` | {MEANING[permission]} | " + " | ".join(marks) + " |")
    return "\n".join(lines)
