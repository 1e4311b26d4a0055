"""Presence: the virtual-time model's speed and its agreement with live clusters, and recordings of a real
hidden Chromium tab with the flap rates the model derives from them."""
