"""Rule handlers, due-date policies and role routing: pure functions of facts -> task effects."""
