"""Ray Tune function trainables, by the name a search-space file gives in `trainable:`.

Each is a thin adapter: trial config in -> `fer_tune.core.training.fit` -> a
`tune.report` with a checkpoint every epoch; resumes from `tune.get_checkpoint()`.
Importing this package does not import Ray (the trainables import it when they run),
so a space file's `trainable:` is checked at load without starting anything.
"""

from trainables import curve, fer_cnn  # noqa: F401  (registers curve and fer_cnn)
from trainables.registry import TRAINABLES

__all__ = ["TRAINABLES"]
