"""Validation every N epochs and, always, after the last one."""

from __future__ import annotations

from ignite.engine import Engine, Events
from monai.handlers import ValidationHandler

__all__ = ["PeriodicValidationHandler"]


class PeriodicValidationHandler(ValidationHandler):
    """MONAI's ``ValidationHandler`` that also validates after the final epoch.

    With ``ValidationHandler(interval=5)`` a run of 12 epochs is last validated at epoch 10, and a run of
    fewer epochs than the interval (a MONAI Label training request with ``max_epochs=1``) never is, so the
    best-model file is never written. This handler adds one validation at the end when the last epoch
    was not validated already.

    Args:
        interval: validate every ``interval`` epochs.
        validator: the evaluator to run.
        validate_last_epoch: also validate after the final epoch (default True).
        exec_at_start: also validate before training starts.
    """

    def __init__(
        self,
        interval: int,
        validator: Engine | None = None,
        validate_last_epoch: bool = True,
        exec_at_start: bool = False,
    ) -> None:
        super().__init__(interval=interval, validator=validator, epoch_level=True, exec_at_start=exec_at_start)
        self.validate_last_epoch = validate_last_epoch

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        if self.validate_last_epoch:
            engine.add_event_handler(Events.COMPLETED, self._final)

    def _final(self, engine: Engine) -> None:
        if engine.state.epoch % self.interval != 0:
            self(engine)
