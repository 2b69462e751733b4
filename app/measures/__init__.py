"""Quality measures for the dashboard (DESIGN.md "Quality measures"; docs/measures.md).

Pure layer: `filters` (the period and its instants), `definitions` (what each measure counts),
`arithmetic` (rates, medians), `charts` (SVG), `csv_export`. Thin query layer: `queries` (SQLAlchemy
Core, SQLite and PostgreSQL) and `service` (what the API and the UI call)."""
