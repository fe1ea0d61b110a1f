"""Query engine, HTTP API and command line of hibt."""
