"""Has a rest_v2 DAQ restarted its services since a config was deployed? Its statistics say so.

On the rest_v2 DAQ every stored config restarts the DAQ's services (the writer and the
detector's receivers) about a second after the deployment reports SUCCESS, while the REST
server goes on showing the writer as it was. A write sent while they are down is answered
after 5 s with "Cannot reach WRITING. Writer needs to be restarted."; one that starts just
before they go down is lost under it and wedges the writer driver; one that ends before
they go down ran with the old config. Nothing in the REST API says when the restart is over.

The statistics do (``daq:stat``, ``GET /daq/stats``): the detector's images per second are
counted from the restarted services' image stream. :class:`RestartSigns` reads samples
``(time, detector images/s)`` in order and knows two signs of the services going down:

- **zeros**: the detector's rate drops to 0 after the deployment, where it was above 0 before
  (the real server's statistics logger runs inside the REST server and goes on writing an
  entry every second, with zeros while no image arrives);
- **silence**: no entry for more than 1.5 periods of the stream (a logger that restarts with
  the services; only where samples carry the DAQ's own times, i.e. read from Redis).

The services are back at the first sample with images after zeros, or the first one after a
silence. Where no sign shows within :data:`SIGN_WINDOW_S` of the deployment (none can where
the detector sent no images before it and a silence cannot be seen), the window is waited out
(the restart begins within it; a write that starts before would be lost under it) and the
restart taken as unseen: the caller goes on and treats a "Cannot reach WRITING" within
:data:`RESTART_WINDOW_S` as that restart.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ._deadline import current

__all__ = ["RestartSigns", "Sample", "wait_for_signs", "SIGN_WINDOW_S", "BACK_WINDOW_S", "RESTART_WINDOW_S", "detector_rate"]

SIGN_WINDOW_S = 5.0
"""From a deployment's SUCCESS: how long its restart may take to show (the real one goes down
about a second after SUCCESS, and a sign shows within one statistics period)."""
BACK_WINDOW_S = 30.0
"""Once down: how long the services may take to come back (the reference: about 10 s to
restart and stabilise)."""
RESTART_WINDOW_S = SIGN_WINDOW_S + BACK_WINDOW_S
"""From a deployment's SUCCESS: a "Cannot reach WRITING" within it may be its restart."""
_DEFAULT_PERIOD_S = 1.0  # daq:stat's period on the real DAQ
_SHORTEST_PERIOD_S = 0.1  # a period is never taken shorter: the gap for a silence stays above a scheduler hiccup
_READ_S = 0.25  # the longest single read of samples: a silence is looked at this often
# A logger held up for a second on a loaded machine (daq-sim shares its process with the tests)
# is not a restart; a real restart keeps the services down for seconds (the reference: about 10 s).
_MIN_SILENCE_S = 2.0

Sample = Tuple[float, float]
"""``(time in seconds, detector images per second)``."""


def detector_rate(stats: Any) -> float:
    """The detector's images per second in a statistics object (0 when absent or malformed)."""
    detector = stats.get("detector") if isinstance(stats, dict) else None
    value = detector.get("images_per_second") if isinstance(detector, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


class RestartSigns:
    """The signs of one restart of the DAQ's services, read from statistics samples in order.

    Args:
        deployed_at: when the deployment reported SUCCESS, on the samples' clock (seconds).
        timed: the samples carry the DAQ's own times (Redis stream ids), so a silence shows;
            ``False`` for samples taken by polling ``GET /daq/stats``, which repeats the last.
        before: samples from before the deployment, oldest first: the detector's rate then
            (the baseline) and the stream's period.

    Attributes:
        down_at, down_by: when the services were seen going down and how (``"zeros"``,
            ``"silence"``), else ``None``.
        back_at: when they were seen back, else ``None``.
        waited: :func:`wait_for_signs` waited for a sign (the deployment was recent enough).
    """

    def __init__(self, deployed_at: float, *, timed: bool, before: Sequence[Sample] = ()) -> None:
        self.deployed_at = deployed_at
        self.timed = timed
        self.baseline: Optional[float] = None
        self.last_at: Optional[float] = None
        self.period = _DEFAULT_PERIOD_S
        self.down_at: Optional[float] = None
        self.down_by: Optional[str] = None
        self.back_at: Optional[float] = None
        self.waited = False
        self._before: List[float] = []
        for at, rate in before:
            self._note_before(at, rate)

    @property
    def gap(self) -> float:
        """A silence longer than this is the services down (never under :data:`_MIN_SILENCE_S`)."""
        return max(1.5 * self.period + 0.25, _MIN_SILENCE_S)

    @property
    def expected(self) -> bool:
        """Whether a sign can come: a silence can be seen, or the detector sent images before."""
        return self.timed or (self.baseline or 0.0) > 0.0

    @property
    def back(self) -> bool:
        return self.back_at is not None

    def _note_before(self, at: float, rate: float) -> None:
        self.baseline = rate
        self._note_time(at)

    def _note_time(self, at: float) -> None:
        """A sample of the stream's usual rhythm: its time counts towards the period."""
        self.last_at = at
        self._before = (self._before + [at])[-10:]
        if len(self._before) >= 2:
            # Entries closer than the shortest period are published at events (a write's start,
            # a reset) besides the logger's beat: they say nothing of its rhythm.
            spacing = [b - a for a, b in zip(self._before, self._before[1:]) if b - a >= _SHORTEST_PERIOD_S]
            if spacing:
                self.period = min(_usual(spacing), 10.0)

    def add(self, at: float, rate: float) -> None:
        """The next sample, in order."""
        if self.back_at is not None:
            return
        if at <= self.deployed_at and self.down_at is None:
            self._note_before(at, rate)
            return
        if self.down_at is None and self._alive_after_deployment and at - self.last_at > self.gap:
            self.down_at, self.down_by = self.last_at, "silence"
        if self.down_at is None:
            if rate <= 0.0 and (self.baseline or 0.0) > 0.0:
                self.down_at, self.down_by = at, "zeros"
            else:
                self._note_time(at)  # still up: the period learns from it
                return
        elif self.down_by == "silence":
            # The first sample after the silence: back, unless it says the detector is still
            # silent where it was not (a zeros server whose logger also paused).
            if rate > 0.0 or (self.baseline or 0.0) <= 0.0:
                self.back_at = at
            else:
                self.down_by = "zeros"
        elif rate > 0.0:
            self.back_at = at
        self.last_at = at

    def silent(self, now: float) -> None:
        """No sample came up to ``now``: a silence longer than :attr:`gap` after the deployment is the services down."""
        if self.down_at is None and self._alive_after_deployment and now - self.last_at > self.gap:
            self.down_at, self.down_by = self.last_at, "silence"

    @property
    def _alive_after_deployment(self) -> bool:
        # A silence counts only from an entry at or after the deployment's SUCCESS: the restart
        # begins after it, so a stream already quiet before it was late (a logger held up on a
        # loaded machine), not down; taking its next entry for "back" sent writes under the
        # old configuration. With no entry since, the window is waited out instead.
        return self.timed and self.last_at is not None and self.last_at >= self.deployed_at

    def outcome(self) -> Dict[str, Any]:
        """What was seen, relative to the deployment: ``{"seen", "sign", "down_after_s", "back_after_s"}``."""

        def after(moment: Optional[float]) -> Optional[float]:
            return None if moment is None else round(max(moment - self.deployed_at, 0.0), 3)

        return {"seen": self.back_at is not None, "sign": self.down_by, "down_after_s": after(self.down_at), "back_after_s": after(self.back_at)}

    def describe(self) -> str:
        """One line for messages: what was seen of the restart."""
        if self.back_at is not None:
            how = "a silence of the statistics" if self.down_by == "silence" else "the detector's images stopping"
            return f"the services restarted ({how} {self.down_at - self.deployed_at:.1f} s after the deployment) and were back after {self.back_at - self.deployed_at:.1f} s"
        if self.down_at is not None:
            return f"the services went down {self.down_at - self.deployed_at:.1f} s after the deployment and were not seen back"
        if not self.expected:
            return "no sign of the restart could show (the detector sent no images before the change)"
        return "no sign of the restart was seen"


def _usual(spacing: List[float]) -> float:
    """The stream's period from the spacing of its entries: the spacing most others agree with
    (within a quarter), the smaller on a tie. A past restart's silence or a burst of two
    entries does not move it, as it would a mean or (with few entries) a median."""

    def support(candidate: float) -> int:
        return sum(1 for other in spacing if abs(other - candidate) <= 0.25 * candidate)

    return max(sorted(spacing), key=support)


def wait_for_signs(signs: RestartSigns, read: Callable[[float], Iterable[Sample]], now: Callable[[], float]) -> RestartSigns:
    """Feed ``signs`` with samples until the services are back, or no sign can be expected any more.

    ``read(seconds)`` returns the samples that came next, waiting at most ``seconds``;
    ``now()`` is the time on the samples' clock. Gives up (returning ``signs`` as they are)
    :data:`SIGN_WINDOW_S` after the deployment without a sign (also where none can show: a
    write sent before the restart begins would be lost under it), :data:`BACK_WINDOW_S`
    after the services went down, or when the bound in force ends.
    """
    bound = current()
    while signs.back_at is None:
        if signs.down_at is None:
            # Also where no sign can show: a write sent before the restart begins is lost under
            # it, so the window in which it begins is waited out.
            limit = signs.deployed_at + SIGN_WINDOW_S
        else:
            limit = signs.down_at + BACK_WINDOW_S
        left = min(limit - now(), bound.remaining())
        if left <= 0:
            break
        signs.waited = True
        for at, rate in read(min(left, _READ_S)):
            signs.add(at, rate)
        signs.silent(now())
    return signs
