"""Running jobs and writing them: resolving, the runner, workers, torchrun, locks, outputs, sidecars, merging."""
