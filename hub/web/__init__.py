"""Server-rendered reviewer pages (Jinja templates, no JavaScript build step)."""
