#!/usr/bin/env python
"""The test project's manage.py: the tests run ``manage.py qw_worker`` through it."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qwdj_project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
