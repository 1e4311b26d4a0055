"""What the rtlib server costs: CPU per delivery and latency against the toy and the floors (``server_cost``,
``scenarios``), memory per idle connection, the history stream, presence modes, Redis round trips, and the
hot path's parts and profiles."""
