"""The entry points behind the thin scripts in `bin/`: one module per command, sharing `app.run`."""
