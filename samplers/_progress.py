"""The warm-up progress bar, fed by host callbacks from inside the jitted warm-up.

Warm-up is one jitted call (a ``lax.scan``), so its progress can only be seen from
inside: the scan body reports the number of finished transitions with
``jax.debug.callback`` (once per step even when the body is ``vmap``-ed over chains
or sharded over devices), and the report goes to the warm-up bar of the run in
progress, if any. The bar is opened by :func:`warmup_scope` around a sampler call,
appears at the first report (after compilation; a warm-up read back from a
checkpoint shows none) and closes when the last transition is reported or the
scope ends.

Because compiled warm-ups are cached and reused by later calls, the callback looks
up the current scope at run time instead of closing over a bar. Runs in
concurrent Python threads would share that lookup (their bars could mix; the
draws are unaffected).
"""

from __future__ import annotations

import contextlib
from typing import Any

import jax

_SCOPES: list[_Scope] = []


class _Scope:
    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar: Any = None

    def report(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="warm-up", unit="step")
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.enabled = False


def _report(done, *, total):
    if _SCOPES:
        _SCOPES[-1].report(int(done), total)


def _report_one(*, total):
    if _SCOPES:
        scope = _SCOPES[-1]
        scope.report((scope.bar.n if scope.bar is not None else 0) + 1, total)


@contextlib.contextmanager
def warmup_scope(enabled: bool):
    """The run whose warm-up bar receives the reports (shown if ``enabled``)."""
    scope = _Scope(bool(enabled))
    _SCOPES.append(scope)
    try:
        yield scope
    finally:
        scope.close()
        _SCOPES.remove(scope)


def report_step(step, total: int) -> None:
    """Inside jitted code: transition ``step`` (0-based, traced) of ``total``
    (static) is done. Reports about every ``total / 100`` transitions."""
    stride = max(1, total // 100)
    done = step + 1
    jax.lax.cond(
        (done % stride == 0) | (done == total),
        lambda: jax.debug.callback(lambda d: _report(d, total=total), done),
        lambda: None,
    )


def report_one(total: int) -> None:
    """Inside jitted code: one more transition of ``total`` (static) is done."""
    jax.debug.callback(lambda: _report_one(total=total))
