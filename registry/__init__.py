"""The core: hook specs, schemas, plugin loading, planner, executor, trainer, store, scorer, CLI."""
