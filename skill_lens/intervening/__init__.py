"""Using skill neurons: interventions as hooks, suppression curves, patching, pruning and what it keeps."""
