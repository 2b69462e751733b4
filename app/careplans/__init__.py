"""Care plans: the domain model, its checks, versioning rules and the PCP sign-off clock (no I/O)."""
