"""The role table says what the issue says each role may do, and its printed form shows exactly that table."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.auth.roles import ROLE_PERMISSIONS, Permission, Role, allows, role_table_markdown


def test_admin_may_do_everything() -> None:
    assert ROLE_PERMISSIONS[Role.admin] == set(Permission)


def test_service_manages_datasets_generation_and_fine_tuning_but_neither_reviews_nor_users() -> None:
    assert ROLE_PERMISSIONS[Role.service] == {
        Permission.read,
        Permission.manage_datasets,
        Permission.generate,
        Permission.finetune,  # [5/8]: service or admin tokens drive the fine-tuning API
    }


def test_reviewers_read_and_review_and_nothing_else() -> None:
    assert ROLE_PERMISSIONS[Role.reviewer] == {Permission.read, Permission.review}


def test_every_role_has_a_row() -> None:
    assert set(ROLE_PERMISSIONS) == set(Role)


@pytest.mark.parametrize(
    ("role", "permission"),
    [
        (Role.reviewer, Permission.generate),  # no jobs
        (Role.reviewer, Permission.finetune),  # no exports, files or fine-tuning
        (Role.reviewer, Permission.manage_datasets),  # no seed or item imports
        (Role.reviewer, Permission.manage_users),
        (Role.reviewer, Permission.review_admin),  # no bulk actions, reopening or settling disputes
        (Role.service, Permission.review),
        (Role.service, Permission.review_admin),
        (Role.service, Permission.manage_users),
    ],
)
def test_what_a_role_may_not_do(role: Role, permission: Permission) -> None:
    assert not allows(role, permission)


def test_the_printed_table_marks_each_allowed_cell_and_no_other() -> None:
    lines = role_table_markdown().splitlines()

    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.strip().strip("|").split("|")]

    header = cells(lines[0])
    assert header[0] == "permission" and header[-len(Role) :] == [r.value for r in Role]
    assert set(cells(lines[1])) == {"---"}
    rows = {}
    for line in lines[2:]:
        row = dict(zip(header, cells(line), strict=True))
        rows[row["permission"].strip("`")] = row
    assert list(rows) == [p.value for p in Permission]
    for permission in Permission:
        for role in Role:
            mark = rows[permission.value][role.value]
            assert mark in ("yes", "") and (mark == "yes") == allows(role, permission), (role, permission)


def test_the_readme_shows_the_role_table_as_the_code_has_it() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    assert role_table_markdown() in readme
