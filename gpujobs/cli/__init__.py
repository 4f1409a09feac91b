"""The `gpujobs` command: the Typer app (app.py) and everything that draws (the *_view modules,
tables, sinks). It asks the core through `gpujobs.api.controller` only, and renders plain data."""
