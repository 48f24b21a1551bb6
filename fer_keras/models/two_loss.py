"""Shared by the models that wrap a functional network with several outputs and train two losses.

`RAMClassifier` (paper 001: attention + perception branch) and `LandmarkARMClassifier` (paper
003: landmark branch + fused classifier) each hold an inner functional network with dict
outputs and compute a second loss from one of them.
"""

import keras


def functional_network(network, outputs):
    """The inner network (deserialised from its config when given as a dict), checked for `outputs`."""
    if isinstance(network, dict):
        network = keras.saving.deserialize_keras_object(network)
    found = getattr(network, "output", None)
    if not isinstance(found, dict) or set(found) != set(outputs):
        raise ValueError(
            f"network must be a functional keras.Model with dict outputs {outputs}. "
            f"Received outputs: {sorted(found) if isinstance(found, dict) else found!r}"
        )
    return network
