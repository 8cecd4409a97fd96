"""The Celery app (flask `examples/celery` pattern): tasks run inside the Flask app context.

`celery -A workers worker` and `leaseflow worker` both use it. Tasks take ids and return a
small JSON dict; they never wait on another task.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from flask import Flask


def make_celery(flask_app: Flask) -> Celery:
    settings = flask_app.config["LEASEFLOW"]

    class FlaskTask(Task):  # type: ignore[misc]
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with flask_app.app_context():
                return self.run(*args, **kwargs)

    celery = Celery("leaseflow", task_cls=FlaskTask)
    celery.conf.update(
        broker_url=settings.broker_url,
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        # Jobs are idempotent (status under the instance lock), so a redelivery is harmless;
        # acks_late keeps a message when its worker dies mid-batch.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=4,
        broker_connection_retry_on_startup=True,
        task_always_eager=settings.embedded_broker,
        worker_hijack_root_logger=False,
    )
    from . import tasks

    tasks.register(celery)
    flask_app.extensions["celery"] = celery
    return celery


def celery_from_env() -> Celery:
    from app import create_app

    return make_celery(create_app(start_background=False))
