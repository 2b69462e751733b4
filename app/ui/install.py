"""Mount the web UI on the app: its routers and its static files (CSS, a little JavaScript)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app.ui import dashboard, patients, sign_in, supervisor, worklist
from app.ui.session import UI_PATH

STATIC_DIR = Path(__file__).parent / "static"


def install_ui(app: FastAPI) -> None:
    for module in (sign_in, worklist, patients, supervisor, dashboard):
        app.include_router(module.router)
    app.mount(f"{UI_PATH}/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
