"""The gallery: SQLite store (the truth), search space (projection, centroids, USearch index),
pure scoring shared by search, evaluation and the running agent, transfer, enrollment."""
