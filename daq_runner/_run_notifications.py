"""The notifications of one ``daq-run`` invocation: settings from every source, told exactly once.

The flags are read first (a mistake there is a usage error before anything else); the DAQ
profile's and the batch's ``notify:`` blocks join them once the DAQ and the batch are known
(:meth:`RunNotifications.add`), before anything is sent to the DAQ. A run that starts is told at
its end through a :meth:`~daq_runner.runner.Runner.at_end` hook (:meth:`RunNotifications.watch`),
so that a delivery that failed is a notice in its report; a run that never started (an invalid
batch, a report path refused, not enough disk, a simulator that did not start) is told by
:meth:`RunNotifications.not_started`. Each problem is one line for stderr; none changes the
exit code. ``--dry-run`` and ``--validate`` tell nobody.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, List, Mapping, Optional, Sequence

from .exit_codes import RunEnding
from .notify import Notifier, NotifySettings

__all__ = ["RunNotifications"]


class RunNotifications:
    """Who is told how this invocation ended, and whether they have been.

    Args:
        flags: the settings of the command line (:meth:`NotifySettings.from_args`).
        warn: prints one line on stderr.
        environ: for the SMTP password of the files' blocks.
        enabled: ``False`` (a dry run, a validation): nobody is told.
    """

    def __init__(self, flags: NotifySettings, warn: Callable[[str], None], *, environ: Optional[Mapping[str, str]] = None, enabled: bool = True) -> None:
        self.flags = flags
        self.settings = flags
        self.warn = warn
        self.environ = environ
        self.enabled = enabled
        self.told = False
        self._notifier: Optional[Notifier] = None

    def add(self, *, profile: Optional[dict] = None, profile_source: Optional[str] = None, batch: Optional[dict] = None, batch_source: str = "batch") -> None:
        """Combine the flags with the DAQ profile's and the batch's ``notify:`` blocks (in that order).

        Raises:
            NotifySettingsError: a block is invalid here (an SMTP login without its password),
                or a ``mailto:`` target has no SMTP server in any source.
        """
        sources = [self.flags]
        if profile is not None:
            sources.append(NotifySettings.from_mapping(profile, source=profile_source or "profile", environ=self.environ))
        if batch is not None:
            sources.append(NotifySettings.from_mapping(batch, source=batch_source, environ=self.environ))
        self.settings = NotifySettings.combine(*sources)

    def _usable(self) -> NotifySettings:
        """The settings known so far, without mail targets when no source gave a mail server
        (the run did not get as far as the source that would have)."""
        from .exceptions import NotifySettingsError

        try:
            return NotifySettings.combine(self.settings)
        except NotifySettingsError:
            rules = tuple(
                replace(rule, targets=tuple(t for t in rule.targets if t.kind != "mail")) for rule in self.settings.rules
            )
            return replace(self.settings, rules=rules, on_override=self.settings.on_override if any(r.targets for r in rules) else None)

    def watch(
        self,
        runner: Any,
        *,
        label: str,
        secrets: Sequence[str],
        report: str,
        resume: str,
        incomplete: Callable[[], List[str]],
    ) -> None:
        """Tell the settings' targets how ``runner``'s run ends, from its end hook, and start the
        heartbeat now. ``incomplete()`` gives the report's and JUnit file's write errors so far:
        a run whose report is incomplete exits 1 and is told so."""
        if not self.enabled or not self.settings:
            return
        notifier = Notifier(self.settings, label=label, secrets=secrets)
        self._notifier = notifier
        runner.subscribe(notifier)

        def tell(ending: RunEnding) -> List[str]:
            notes = incomplete()
            ending = replace(ending, report_incomplete=bool(notes))
            problems = notifier.deliver(ending.exit_code, report, resume, notes=notes, ending=ending)
            self.told = True
            for line in problems:
                self.warn(f"daq-run: {line}")
            return problems

        tell.__name__ = "notify"
        runner.at_end(tell)
        notifier.start()

    def not_started(self, exit_code: int, reason: str, label: Optional[str] = None) -> None:
        """Tell the targets known so far that the run did not start (``exit_code``, ``reason``)."""
        settings = self._usable()
        if not self.enabled or self.told or not settings:
            return
        self.told = True
        notifier = self._notifier or Notifier(settings, label=label)
        for line in notifier.deliver(exit_code, notes=[reason]):
            self.warn(f"daq-run: {line}")
