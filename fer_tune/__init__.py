"""fer-tune: hyperparameter search for facial-emotion-recognition CNNs.

Importing the package is cheap on purpose (no torch, ray or mlflow here), so
that `fer-tune --help` answers at once; heavy libraries are imported inside the
commands that need them.
"""

__version__ = "0.1.0"
