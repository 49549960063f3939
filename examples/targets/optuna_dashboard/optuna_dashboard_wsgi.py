"""optuna-dashboard as its docs deploy it on a production WSGI server: the module a user
writes, `application = wsgi(storage)`, with the storage URL from the environment (the
battery hands the service a database URL in OPTUNA_STORAGE)."""

import os

from optuna.storages import RDBStorage
from optuna_dashboard import wsgi

application = wsgi(RDBStorage(os.environ["OPTUNA_STORAGE"]))
