"""The run directory: its artifacts and lineage, several seeds, the report, and one step per subcommand."""
