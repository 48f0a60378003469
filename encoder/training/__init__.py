"""The trainer behind `npe train`, in small steps with callbacks (see `trainer.Trainer`).

Modules: `config` (TrainConfig, its checks; torch-free, so the CLI reads its defaults
without importing torch), `events` (typed progress events), `data` (sessions: recordings,
cells, chunks, the epoch plan), `prefetch` (background batch thread), `init` (weight
initialisation from the data and from another run), `callbacks` (checkpoint, metrics files,
train state, early stopping, progress), `trainer` (the loop). `encoder.train` re-exports
the public names. Nothing is imported here, so `encoder.training.config` stays light.
"""
