"""gradserve's HTTP API: `create_app` builds it; gunicorn serves `service.wsgi:app`."""
