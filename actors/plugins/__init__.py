"""The plugin API, above the core: new actor types that live in a node's actor tree.

Plugin authors import its public names from :mod:`hubbub.plugin` (and test helpers from
:mod:`hubbub.testing`); the modules here are how it is built:

* ``actor.py``     — :class:`PluginActor`, the base class: hooks, actions, its mailbox;
* ``hub.py``       — :class:`PluginHub`, the node's side: start, supervise, give up;
* ``settings.py``  — checking settings tables and timer delays;
* ``registry.py``  — every PluginActor subclass under ``module:Class``.

The core knows nothing of this package: rooms and users publish to the observer port
(``actors/core/observe.py``) and plugins subscribe there.

Two plugins ship with hubbub, disabled by default (docs/extending.md explains both):

* ``actors.plugins.moderation:ModerationActor`` warns, then kicks, users who repeat
  themselves or use a banned word.
* ``actors.plugins.bot:BotActor`` sits in rooms, greets joiners and answers
  ``!help``, ``!who`` and ``!uptime``.

Enable one with ``--plugin actors.plugins.bot:BotActor``.
"""

__all__: list[str] = []
