"""`sainet bench`: the service measured against its compute limit, the framework floor and a naive server."""
