"""The run directory: its artifacts and lineage, several seeds, the report, the plan before a run, and one step per subcommand."""
