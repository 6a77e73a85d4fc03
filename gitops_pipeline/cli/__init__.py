"""gitopsctl: the operator's command line; talks to the REST API only."""
