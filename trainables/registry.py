"""The trainable registry: the names a search-space file may give in `trainable:`."""

from fer_tune.registry import Registry

TRAINABLES = Registry("trainable")
