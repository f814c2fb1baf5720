"""The API-neutral serving core: a request becomes a :class:`~server.serving.plan.GenerationPlan`
(built once, immutable); :class:`~server.serving.core.ServingCore` runs it and yields one typed
event stream (:mod:`server.serving.events`). Every API adapter in ``server/routes`` turns its
request into a plan and the events into its wire format; nothing else. See docs/ARCHITECTURE.md."""
