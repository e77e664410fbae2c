"""Dataset examples and the web atlas."""
