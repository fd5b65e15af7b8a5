"""Facts about the data, named once and imported everywhere."""

# FER2013 label order: the integer in the CSV's `emotion` column indexes this tuple.
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

IMAGE_SIZE = 48  # FER2013 images are 48x48 grayscale
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE  # 2304 numbers per `pixels` field

# FER2013's `Usage` column -> our split names.
USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}
SPLITS = ("train", "validation", "test")
