"""Signals sent by the domain functions, after the change is committed.

State-change signals are sent from ``transaction.on_commit``: receivers never see a change that
is later rolled back. ``capability_executed`` and ``capability_refused`` are sent when the call is
answered (for async capabilities, when the job is accepted). ``sender`` is the model class.
"""

from django.dispatch import Signal

#: A new agent was registered. kwargs: ``agent``, ``host``, ``created_host`` (bool).
agent_registered = Signal()
#: A person (or policy) decided an approval. kwargs: ``agent``, ``approved`` (list of capability
#: names), ``denied`` (list), ``rejected`` (bool: the whole connection was denied), ``actor``.
approval_decided = Signal()
#: An agent was revoked. kwargs: ``agent``, ``reason``, ``actor_type``.
agent_revoked = Signal()
#: A host was revoked. kwargs: ``host``, ``agents_revoked`` (int), ``actor_type``.
host_revoked = Signal()
#: A host was linked to a user. kwargs: ``host``, ``user``, ``claimed`` (ids of claimed agents).
host_linked = Signal()
#: A capability ran. kwargs: ``agent``, ``capability``, ``mode`` (sync/async/stream), ``jti``.
capability_executed = Signal()
#: A capability call was refused or failed. kwargs: ``agent``, ``capability``, ``error`` (code).
capability_refused = Signal()
#: An agent's session ended (idle or max lifetime). kwargs: ``agent``. The sweep sends
#: ``sweep_finished`` instead of one signal per agent.
agent_expired = Signal()
#: An expired agent was reactivated. kwargs: ``agent``, ``status`` (active/pending).
agent_reactivated = Signal()
#: A key was rotated. kwargs: ``agent`` or ``host`` (the other is None), ``actor_type``.
key_rotated = Signal()
#: A host was unlinked from its user. kwargs: ``host``, ``agents_revoked`` (ids).
host_unlinked = Signal()
#: A sweep ran. kwargs: ``counts`` (dict of what changed).
sweep_finished = Signal()
