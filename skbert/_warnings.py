"""Warnings that point at the user's line, not at skbert's or scikit-learn's internals."""

from __future__ import annotations

import sys
import warnings

_INTERNAL = ("skbert", "sklearn", "joblib")  # Pipeline steps run through joblib.Memory


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """Warn, attributed to the first caller outside skbert, scikit-learn and joblib.

    A transform reached through ``set_output``'s wrapper, a ``Pipeline`` or
    ``GridSearchCV`` then shows the user's call, whatever the depth in between.
    """
    frame, level = sys._getframe(1), 2  # 2: the caller of warn_user
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] in _INTERNAL:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
