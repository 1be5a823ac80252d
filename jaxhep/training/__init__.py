"""The training engine shared by every estimator: `fit`, and its data-parallel helpers."""

from jaxhep.training.fit import (
    History,
    check_clip_norm,
    check_ema_decay,
    check_lr_decay,
    check_positive_int,
    check_weight_decay,
    drop_nonfinite,
    fit,
    split_train_val,
)
from jaxhep.compilation import jit_kwargs  # kept here for code written before jaxhep.compilation
from jaxhep.training.parallel import check_devices, data_mesh, use_cpu_cores

__all__ = ["History", "check_clip_norm", "check_devices", "check_ema_decay", "check_lr_decay", "check_positive_int",
           "check_weight_decay", "data_mesh", "drop_nonfinite", "fit", "jit_kwargs", "split_train_val", "use_cpu_cores"]
