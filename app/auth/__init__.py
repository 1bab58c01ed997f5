"""Users, roles, API tokens, UI sessions and the audit log; and the check every route passes before it runs."""
