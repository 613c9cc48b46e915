"""Load tests (locust) and the side-by-side benchmark of the gateway and its Python alternatives."""
