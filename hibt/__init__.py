"""hibt: is my work in this training set? Reverse-image search over AI training sets.

The distribution installs one namespace: ``hibt`` (settings, errors, the command line),
``hibt.indexer`` (the ``indexer/`` folder) and ``hibt.server`` (the ``server/`` folder);
docs/architecture.md is the map.
"""

__version__ = "0.1.0"
