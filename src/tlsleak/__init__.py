"""tlsleak."""
