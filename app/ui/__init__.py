"""The web UI under `/ui`: server-rendered pages over the same access, audit and state functions as
the REST API (docs/ui.md). Nothing here decides who may see or change what; it calls what the API calls."""
