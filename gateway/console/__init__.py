"""Arbiter's read-only web console, served by the gateway at ``/console`` when the
config says ``console: {enabled: true}``.

Pages (plain HTML rendered on the server, charts drawn by the vendored uPlot):

* deployments: router kind, each arm's traffic share over time, posterior means with
  their intervals, the champion and its promotions with their evidence, shadow
  agreement, the circuit breaker of each model;
* decisions: recent ones filtered by deployment, routed model, outcome or refusals, a
  look-up by id, and one decision in full (inputs in the data's own terms, every
  model's output, propensity, feedback and its history, the explanation's reasons);
* fairness: per protected group and model, approval and error rates with their
  intervals and over time, and the alerts that fire.

It reads what the API reads (deployment state, the decision store, the fairness
monitors), so any replica shows the same. Routes and authentication:
``gateway.console.routes``; reads: ``gateway.console.reading``; escaping:
``gateway.console.markup``; static snapshots: ``gateway.console.snapshot``.
"""

from gateway.console.routes import CONSOLE_ROUTES, COOKIE, Console, add_console

__all__ = ["CONSOLE_ROUTES", "COOKIE", "Console", "add_console"]
