"""The signs of the DAQ's services restarting after a deployment, read from statistics samples."""

from __future__ import annotations

from daq_runner._restart import SIGN_WINDOW_S, RestartSigns, wait_for_signs

BEFORE = [(-3.0, 100.0), (-2.0, 100.0), (-1.0, 100.0)]


def feed(signs, samples):
    for at, rate in samples:
        signs.add(at, rate)
    return signs


def test_zeros_after_the_deployment_then_images_again_are_the_restart():
    """A server that writes zeros while the services are down: down at the first 0, back at the first rate after."""
    signs = feed(RestartSigns(0.0, timed=True, before=BEFORE), [(0.5, 100.0), (1.5, 0.0), (2.5, 0.0), (3.5, 100.0)])
    assert {"seen": True, "sign": "zeros", "down_after_s": 1.5, "back_after_s": 3.5} == signs.outcome()


def test_a_silence_then_an_entry_is_the_restart():
    """A logger that restarts with the services: a gap of more than 1.5 periods, then the next entry is back."""
    signs = feed(RestartSigns(0.0, timed=True, before=BEFORE), [(0.4, 100.0), (3.0, 100.0)])
    assert {"seen": True, "sign": "silence", "down_after_s": 0.4, "back_after_s": 3.0} == signs.outcome()


def test_a_silence_that_began_before_the_deployment_is_no_sign():
    """The last entry came before SUCCESS and the next one late: a held-up logger, not the restart
    (which begins after SUCCESS); the late entry shows the stream alive, and a later silence counts."""
    signs = feed(RestartSigns(0.0, timed=True, before=BEFORE), [(1.0, 100.0)])
    assert (None, False) == (signs.down_by, signs.back)
    signs.silent(2.0)
    assert signs.down_at is None, "1 s since the entry after the deployment is one period"
    feed(signs, [(3.5, 100.0)])
    assert {"seen": True, "sign": "silence", "down_after_s": 1.0, "back_after_s": 3.5} == signs.outcome()


def test_a_silence_still_going_on_is_the_services_down():
    """No entry for longer than the gap: down already, back at the next entry."""
    signs = RestartSigns(0.0, timed=True, before=BEFORE)
    signs.add(0.4, 100.0)
    signs.silent(1.5)
    assert signs.down_at is None, "1.1 s without an entry is one period"
    signs.silent(2.5)
    assert ("silence", 0.4, False) == (signs.down_by, signs.down_at, signs.back)
    signs.add(3.0, 100.0)
    assert signs.back


def test_the_period_is_the_usual_spacing_not_a_past_restarts_silence():
    """Entries 1 s apart with an earlier restart's 2.4 s gap among few samples: the period stays 1 s,
    so the next silence of 2.5 s shows."""
    signs = RestartSigns(0.0, timed=True, before=[(-4.0, 100.0), (-3.0, 100.0), (-0.6, 100.0)])
    assert 1.0 == signs.period
    feed(signs, [(0.4, 100.0), (2.9, 100.0)])
    assert "silence" == signs.down_by and signs.back


def test_entries_published_at_events_do_not_shorten_the_period():
    """A reset or a write's start publishes entries besides the 1 s beat, a few ms apart: the period
    stays 1 s, so the next beat 1 s on is not taken for the services going down."""
    burst = [(-2.0 + 0.001 * i, 100.0) for i in range(1, 7)]
    signs = RestartSigns(0.0, timed=True, before=[(-4.0, 100.0), (-3.0, 100.0), (-2.0, 100.0), *burst, (-1.0, 100.0)])
    assert abs(signs.period - 1.0) < 0.01
    feed(signs, [(0.05, 100.0), (1.05, 100.0)])
    assert signs.down_at is None


def test_untimed_samples_show_no_silence_and_an_idle_detector_no_zeros():
    """Polled samples cannot show a silence; a detector that sent nothing before cannot show zeros."""
    polled = feed(RestartSigns(0.0, timed=False, before=[(0.0, 100.0)]), [(0.1, 100.0), (9.0, 100.0)])
    assert (True, None) == (polled.expected, polled.down_at)
    idle = feed(RestartSigns(0.0, timed=False, before=[(0.0, 0.0)]), [(1.0, 0.0), (2.0, 0.0)])
    assert (False, None) == (idle.expected, idle.down_at)


def test_zeros_after_a_silence_are_still_down():
    """A zeros server whose logger also paused: the entry after the silence says 0, so not back yet."""
    signs = feed(RestartSigns(0.0, timed=True, before=BEFORE), [(0.4, 100.0), (3.0, 0.0)])
    assert ("zeros", False) == (signs.down_by, signs.back)
    signs.add(4.0, 50.0)
    assert signs.back


def test_wait_gives_up_after_the_window_without_a_sign():
    """No sign within the window after the deployment: the wait ends, nothing seen."""
    clock = [0.0]

    def read(seconds):
        clock[0] += seconds
        return [(clock[0], 0.0)]

    signs = wait_for_signs(RestartSigns(0.0, timed=False, before=[(0.0, 0.0)]), read, lambda: clock[0])
    assert (False, True) == (signs.back, signs.waited)
    assert SIGN_WINDOW_S <= clock[0] < SIGN_WINDOW_S + 0.3


def test_wait_ends_at_the_sign_of_being_back():
    """The wait returns at the first sample that shows the services back, not at the window's end."""
    samples = iter([[(0.5, 100.0)], [(1.5, 0.0)], [], [(2.5, 80.0)], [(3.5, 100.0)]])
    clock = [0.0]

    def read(seconds):
        clock[0] += seconds
        return next(samples)

    signs = wait_for_signs(RestartSigns(0.0, timed=True, before=BEFORE), read, lambda: clock[0])
    assert (True, 2.5) == (signs.back, signs.back_at)


def test_a_restart_already_over_in_the_history_needs_no_wait():
    """Read from the history, a restart that is over: no read at all."""
    signs = feed(RestartSigns(0.0, timed=True, before=BEFORE), [(1.5, 0.0), (2.5, 100.0)])

    def read(seconds):
        raise AssertionError("no wait")

    assert wait_for_signs(signs, read, lambda: 60.0).back
