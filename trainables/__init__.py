"""Ray Tune function trainables, by the name a search-space file gives in `trainable:`.

Each is a thin adapter: trial config in -> `fer_tune.training.fit` -> a
`tune.report` with a checkpoint every epoch; resumes from `tune.get_checkpoint()`.
"""

from trainables.fer_cnn import train_fer_cnn

TRAINABLES = {"fer_cnn": train_fer_cnn}
