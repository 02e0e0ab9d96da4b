"""The backends qw-core ships: ``memory`` and ``sqlite`` (the embedded default).

They register through the ``qw.backends`` entry points like any third party.
"""
