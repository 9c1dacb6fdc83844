"""Two plugins shipped with hubbub, disabled by default (docs/extending.md explains both).

* ``actors.plugins.moderation:ModerationActor`` warns, then kicks, users who repeat
  themselves or use a banned word.
* ``actors.plugins.bot:BotActor`` sits in rooms, greets joiners and answers
  ``!help``, ``!who`` and ``!uptime``.

Enable one with ``--plugin actors.plugins.bot:BotActor``.
"""

__all__: list[str] = []
