from django.db import models


class Order(models.Model):
    """A row a task or a test writes, to see which writes a transaction kept."""

    ref = models.CharField(max_length=100, unique=True)

    class Meta:
        app_label = "qwdj_shop"
