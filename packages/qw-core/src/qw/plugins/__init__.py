"""Plugins that ship with qw-core (registered through the ``qw.plugins`` entry-point group)."""
