"""Echo server and client/load generator."""
