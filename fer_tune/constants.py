"""Facts about the data and the project's folders, named once and imported everywhere."""

from pathlib import Path

# FER2013 label order: the integer in the CSV's `emotion` column indexes this tuple.
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

IMAGE_SIZE = 48  # FER2013 images are 48x48 grayscale
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE  # 2304 numbers per `pixels` field
PIXEL_MAX = 255  # images are stored as uint8 grey levels 0..255; models see them divided by this, in [0, 1]

# FER2013's `Usage` column -> our split names.
USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}

RESULTS_DIR = Path("results")  # sweeps' tables, Ray's storage and the default MLflow store, relative to the cwd
# What else lives in results/ beside the sweeps' folders: no sweep may take these names.
RAY_DIR = "ray"  # Ray's storage: results/ray/<sweep>/
MLFLOW_DB = "mlflow.db"  # the default MLflow store
MLFLOW_ARTIFACTS = "mlartifacts"  # its artifacts, beside it
CLAIMS_DIR = ".claims"  # results/.claims/NAME.lock: held by the process running sweep NAME
RESERVED_NAMES = (RAY_DIR, MLFLOW_DB, MLFLOW_ARTIFACTS, CLAIMS_DIR)
