"""Read queries of the API (and the few key writes), one module per area."""
