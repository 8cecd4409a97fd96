"""Celery workers: the app (`celery_app`) and thin task modules that call services in `app/`."""
