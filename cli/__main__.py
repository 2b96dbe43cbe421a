"""`python -m cli`: the `agentrag` command without its installed entry point."""

from cli.main import app

app(prog_name="agentrag")
