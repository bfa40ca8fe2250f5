"""The binary cache of Software Releases (SlapOS's networkcache: shacache + shadir).

A release is looked up before it is built and published after, in the reference's format,
so slapgrid and slapos.core nodes share one cache. `decisions` holds every rule (pure,
tested fast); `transfer` talks to the cache through `client` (our own networkcache client).
"""
