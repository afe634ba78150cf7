"""Training submodule: targets, losses (MSE, soft Dice, TOPO), training loop, calibration.

The inference path never imports this package.
"""
