"""The test project's tasks: Django's own @task, nothing qw-specific."""

from django.tasks import task

from qwdj_shop.models import Order


@task
def add(a, b):
    return a + b


@task
def make_order(database, ref):
    """Write an Order row in ``database``; answer its ref and how many orders exist."""
    Order.objects.using(database).create(ref=ref)
    return {"ref": ref, "orders": Order.objects.using(database).count()}


@task
def boom(message):
    raise ValueError(message)


@task(takes_context=True)
def whoami(context, tag):
    result = context.task_result
    return {
        "tag": tag,
        "id": result.id,
        "attempt": context.attempt,
        "status": result.status,
        "worker": result.worker_ids[-1],
    }


@task
async def async_add(a, b):
    return a + b


@task
def unjsonable():
    return {1, 2}


@task(takes_context=True)
def flaky(context, fail_until):
    """Raise on the attempts before ``fail_until``, then answer the attempt that succeeded."""
    if context.attempt < fail_until:
        raise RuntimeError(f"attempt {context.attempt} fails")
    return context.attempt
