"""The training engine shared by every estimator: `fit`."""

from jaxhep.training.fit import History, drop_nonfinite, fit, split_train_val

__all__ = ["History", "drop_nonfinite", "fit", "split_train_val"]
