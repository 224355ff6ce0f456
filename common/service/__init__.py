"""Service glue every party shares: the Flask app base, HTTP clients, storage, audit, auth and the command line."""
