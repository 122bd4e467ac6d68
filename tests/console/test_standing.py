"""The deployments page's "standing" column: who leads, and no leader on a tie."""

from __future__ import annotations

from gateway.console.deployments import _standing


def test_the_arm_ahead_is_named_and_a_tie_names_none() -> None:
    assert _standing({"arms": {"lr": {"mean": 0.5}, "gbm": {"mean": 0.5}}}) == "no arm ahead yet"
    assert _standing({"arms": {"lr": {"mean": 0.5}, "gbm": {"mean": 0.75}}}).startswith(
        "best so far gbm (")
    assert _standing({"champion": "lr", "arms": {"lr": {"mean": 0.9}}}) == "champion lr"
