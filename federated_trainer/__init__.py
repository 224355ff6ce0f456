"""The user's side of federated_trainer: a Python client for the model creator, and its command line.

>>> from federated_trainer import Client
>>> client = Client("http://localhost:9090")          # doctest: +SKIP
>>> model = client.train(features=["age", "bmi"])    # doctest: +SKIP

The services themselves are the packages ``coordinator``, ``data_owner`` and ``model_creator``
(``federated-coordinator``, ``federated-data-owner`` and ``federated-model-creator`` once the
project is installed with ``pip install .``).
"""

from federated_trainer.client import Client, ClientError

__all__ = ["Client", "ClientError"]
