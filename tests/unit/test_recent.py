"""The escalations kept decoded between event batches: reused only at their committed version."""

from __future__ import annotations

from dataclasses import replace

from escalator.domain.ids import EscalationId
from escalator.store.recent import RecentEscalations
from tests.unit.factories import escalation

ONE = replace(escalation(), id=EscalationId("esc_" + "1" * 32))
TWO = replace(escalation(), id=EscalationId("esc_" + "2" * 32))
THREE = replace(escalation(), id=EscalationId("esc_" + "3" * 32))


def test_an_escalation_is_reused_only_at_the_version_it_was_committed_at() -> None:
    recent = RecentEscalations(4)
    recent.remember([ONE])
    assert recent.get(ONE.id, ONE.version) is ONE
    assert recent.get(ONE.id, ONE.version + 1) is None  # changed since: read again
    assert recent.get(TWO.id, TWO.version) is None
    newer = replace(ONE, version=ONE.version + 1)
    recent.remember([newer])
    assert recent.get(ONE.id, newer.version) is newer
    assert recent.get(ONE.id, ONE.version) is None


def test_the_least_recently_used_go_first_and_size_zero_keeps_none() -> None:
    recent = RecentEscalations(2)
    recent.remember([ONE, TWO])
    assert recent.get(ONE.id, ONE.version) is ONE  # ONE is now the most recent
    recent.remember([THREE])
    assert recent.get(TWO.id, TWO.version) is None
    assert recent.get(ONE.id, ONE.version) is ONE
    assert recent.get(THREE.id, THREE.version) is THREE
    none = RecentEscalations(0)
    none.remember([ONE])
    assert none.get(ONE.id, ONE.version) is None
