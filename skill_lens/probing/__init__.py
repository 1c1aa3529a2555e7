"""Finding skill neurons: activation capture, the one streaming probe, predictivity and its permutation null, neuron sets."""
