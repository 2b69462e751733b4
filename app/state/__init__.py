"""Database adapters that apply decoded events to stored state. Thin: decisions live in app/rules."""
