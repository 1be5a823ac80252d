"""The training engine shared by every estimator: `fit`."""

from jaxhep.training.fit import History, check_ema_decay, check_lr_decay, check_positive_int, drop_nonfinite, fit, split_train_val

__all__ = ["History", "check_ema_decay", "check_lr_decay", "check_positive_int", "drop_nonfinite", "fit", "split_train_val"]
