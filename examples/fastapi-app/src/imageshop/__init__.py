"""An image shop: a FastAPI app (``imageshop.api``) whose work runs as qw tasks.

The tasks and their qw app are in ``imageshop.tasks``.
"""
