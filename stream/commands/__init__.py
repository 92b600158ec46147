"""Sub-commands of the `stream` CLI, one module each (see stream.cli)."""
