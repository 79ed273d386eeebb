"""How an estimator reaches the encoder: the loaded model, its encoding options, its cache
store, the progress bar, and what the last call did.

A mixin shared by :class:`~skbert.BertEmbedder`'s ``transform`` and its token-level
methods (:class:`~skbert._token_level.TokenLevelMixin`); it reads parameters and
fitted attributes and delegates to the modules that do the work.
"""

from __future__ import annotations

from ._cache import store_for
from ._device import default_token_budget, resolve_device, resolve_dtype
from ._encoding import TOTALS, EncodingReport
from ._models import LoadedModel, load_model
from ._packing import use_packed
from ._report import TransformReport
from ._validation import validate_pairs, validate_texts
from ._warnings import warn_user

#: Seconds a call runs before ``show_progress`` draws its bar.
PROGRESS_DELAY_S = 1.0


class EncoderAccessMixin:
    """Helpers over the estimator's parameters; no state of its own."""

    def _read(self, X) -> list:
        """The input's texts (or, with ``pairs=True``, its (A, B) pairs), checked, in order."""
        return validate_pairs(X) if self.pairs else validate_texts(X)

    def _load(self) -> LoadedModel:
        device = resolve_device(self.device, self.precision)
        dtype = resolve_dtype(self.precision, device)
        return load_model(self.model_name, self.revision, device, dtype, quantize=self.precision == "int8")

    def _encoding_options(self, loaded: LoadedModel) -> dict:
        return {
            "max_length": self.max_length_,
            "long_text": self.long_text,
            "stride": self.stride_,
            "batch_size": self.batch_size,
            "token_budget": self.token_budget or default_token_budget(loaded.device),
            "packed": use_packed(self.attention, loaded.device),
        }

    def _store(self):
        return store_for(self.cache, self.cache_memory_bytes, self.cache_disk_bytes)

    def cache_info(self) -> dict:
        """What this estimator's cache holds, and what encoding has cost.

        Returns
        -------
        dict
            With a cache, its counters and sizes (the fields of
            :class:`~skbert._cache.CacheInfo`: ``hits``, ``misses``, ``disk_hits``,
            ``memory_entries``, ``memory_bytes``, ``disk_entries``, ``disk_bytes``,
            evictions, ``corrupt``, ``disk_path``...). Always ``n_encoded``: texts
            the model has encoded in this process (every estimator and call). A
            single call's counts come from ``transform_with_report``.
        """
        store = self._store()
        info = {} if store is None else dict(store.info().__dict__)
        info["n_encoded"] = TOTALS.n_encoded
        return info

    def _progress(self, total: int):
        from tqdm.auto import tqdm

        # a bar only for work that takes a while: nothing for a one-text predict
        return tqdm(total=total, unit="text", desc="skbert", disable=not self.show_progress, delay=PROGRESS_DELAY_S)

    def _report(self, encoding: EncodingReport, n_rows: int, n_unique: int, n_long: int) -> TransformReport:
        """The call's counts; warns (at the user's line) when texts were truncated."""
        n_truncated = 0 if self.long_text == "chunk" else n_long
        if self.long_text == "truncate" and n_long:
            what, remedy = ("pairs", " from the longer side") if self.pairs else (
                "texts", "; long_text='chunk' covers them whole")
            warn_user(
                f"{n_long} of {n_rows} {what} were longer than max_length={self.max_length_} tokens and were "
                f"truncated{remedy}."
            )
        return TransformReport(n_rows, n_unique, encoding.n_encoded, encoding.n_cache_hits, n_long, n_truncated)

    def __setstate__(self, state):
        """Restore a pickle (made without weights); with ``device="auto"`` the device is chosen anew."""
        self.__dict__.update(state)
        if "device_" in state and self.device == "auto":
            device = resolve_device("auto", self.precision)
            self.device_ = str(device)
            if self.precision != "int8":
                self.precision_ = str(resolve_dtype(self.precision, device)).removeprefix("torch.")
